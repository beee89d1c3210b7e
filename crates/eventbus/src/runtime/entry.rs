//! The per-entry sequence both modes run.
