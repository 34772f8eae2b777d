//! The Proxmox VE target: `imgbuild deploy` and `imgbuild destroy` over the
//! PVE HTTP API only (no SSH to nodes or guests, no snippets).
//!
//! - [`api`]: the client (token auth, TLS from [`tls`], envelope, errors, uploads)
//! - [`params`]: request parameters and property strings as PVE parses them
//! - [`task`]: UPIDs and task polling
//! - [`state`]: tags, descriptions and volume names: Proxmox is the state
//! - [`cluster`]: one concurrent read of everything deploy needs to know
//! - [`preflight`]: every blocking problem, before any change
//! - [`plan`]: desired vs actual -> create / update / replace / finish / delete
//! - [`apply`]: the changes, guests in parallel, each step repeatable
//! - [`backup`]: the lab's scheduled backup job (`/cluster/backup`)
//! - [`volumes`]: data volumes kept across upgrades (parked on a holder guest)
//! - [`snapshot`]: imgbuild's snapshots (pre-change, scheduled), pruning, rollback
//! - [`restore`]: the guests' vzdump backups and restoring one
//! - [`prechange`]: a snapshot before an in-place change, or a vzdump where there can be none

pub mod api;
pub mod apply;
pub mod backup;
pub mod cluster;
pub mod params;
pub mod plan;
pub mod prechange;
pub mod preflight;
pub mod restore;
pub mod snapshot;
pub mod state;
pub mod task;
pub mod tls;
mod upload;
pub mod volumes;

use std::net::{SocketAddr, SocketAddrV4};

use anyhow::Result;
use url::Url;

use crate::diag::{BadInput, Diagnostic};
use crate::model::lab::{Lab, Tls};
use api::{Endpoint, Token};
use tls::TlsMode;

/// Environment overrides; they win over the lab file.
pub const ENV_ENDPOINT: &str = "IMGBUILD_PVE_ENDPOINT";
pub const ENV_TOKEN: &str = "IMGBUILD_PVE_TOKEN";
pub const ENV_FINGERPRINT: &str = "IMGBUILD_PVE_FINGERPRINT";

/// The token and its secret part never reach an error message (redact::scrub).
fn register_token_secret(token: &str) {
    crate::redact::register_secret(token);
    if let Some((_, secret)) = token.split_once('=') {
        crate::redact::register_secret(secret);
    }
}

fn env_problem(var: &str, message: String) -> anyhow::Error {
    BadInput(vec![Diagnostic {
        file: format!("${var}").into(),
        line: 1,
        column: 1,
        field: var.to_string(),
        message,
    }])
    .into()
}

fn lab_problem(lab: &Lab, field: &str, message: String) -> anyhow::Error {
    let pos = lab.spans.get(field);
    BadInput(vec![Diagnostic {
        file: lab.path.clone(),
        line: pos.line,
        column: pos.column,
        field: field.to_string(),
        message,
    }])
    .into()
}

/// Where and how to connect: the lab's `proxmox:` section with the
/// environment's overrides applied. The token is read here and only kept in
/// [`Token`], which never prints its secret.
pub fn endpoint(lab: &Lab, insecure: bool) -> Result<Endpoint> {
    let base = match std::env::var(ENV_ENDPOINT) {
        Ok(s) if !s.is_empty() => {
            let u = Url::parse(&s).map_err(|e| {
                env_problem(
                    ENV_ENDPOINT,
                    format!("not a URL ({e}); expected e.g. https://192.168.1.2:8006"),
                )
            })?;
            if u.scheme() != "https" || u.host().is_none() {
                return Err(env_problem(
                    ENV_ENDPOINT,
                    "expected an https:// URL with a host, e.g. https://192.168.1.2:8006".into(),
                ));
            }
            u
        }
        _ => lab.proxmox.endpoint.clone(),
    };
    let token = match std::env::var(ENV_TOKEN) {
        Ok(s) if !s.is_empty() => {
            register_token_secret(&s);
            Token::parse(&s).map_err(|m| env_problem(ENV_TOKEN, m))?
        }
        _ => {
            let raw = lab.proxmox.token.resolve().map_err(|e| {
                lab_problem(
                    lab,
                    "proxmox.token",
                    format!("{e:#} (or set {ENV_TOKEN} to USER@REALM!TOKENID=SECRET)"),
                )
            })?;
            register_token_secret(&raw);
            Token::parse(&raw).map_err(|m| {
                lab_problem(
                    lab,
                    "proxmox.token",
                    format!("the secret {} is malformed: {m}", lab.proxmox.token),
                )
            })?
        }
    };
    let tls = if insecure {
        tracing::warn!("TLS verification of {base} is OFF (--insecure-skip-tls-verify): anyone on the path can read the API token");
        eprintln!("WARNING: TLS verification is OFF (--insecure-skip-tls-verify); the API token can be intercepted");
        TlsMode::Insecure
    } else {
        match std::env::var(ENV_FINGERPRINT) {
            Ok(s) if !s.is_empty() => TlsMode::Fingerprint(
                tls::parse_fingerprint(&s).map_err(|m| env_problem(ENV_FINGERPRINT, m))?,
            ),
            _ => match &lab.proxmox.tls {
                Tls::Verify => TlsMode::System,
                Tls::CaFile(p) => TlsMode::CaFile(p.clone()),
                Tls::Fingerprint(fp) => TlsMode::Fingerprint(
                    tls::parse_fingerprint(fp)
                        .map_err(|m| lab_problem(lab, "proxmox.tls.fingerprint", m))?,
                ),
            },
        }
    };
    Ok(Endpoint { base, token, tls })
}

/// Guests on Proxmox are reached at their lab address.
pub struct ProxmoxTarget;

impl super::Target for ProxmoxTarget {
    fn name(&self) -> &'static str {
        "proxmox"
    }
    fn reach(&self, guest: &crate::resolve::GuestSpec, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(guest.address, port))
    }
}
