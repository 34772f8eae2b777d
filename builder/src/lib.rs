//! imgbuild: lab and recipe models, artifact fetching, image baking.
//!
//! The CLI (`main.rs`) is a thin shell over this library: it parses arguments
//! with [`cli`], dispatches to [`commands`], and maps errors to exit codes
//! (0 ok, 1 failure, 2 bad input via [`diag::BadInput`]).

pub mod artifact;
pub mod bake;
pub mod cidata;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod fetch;
pub mod fsutil;
pub mod http;
pub mod lock;
pub mod model;
pub mod payload;
pub mod ready;
pub mod redact;
pub mod resolve;
pub mod scrape;
pub mod seed;
pub mod target;
pub mod verify;
