//! The seed document imgbuild hands to every guest, and the engine that applies it.
