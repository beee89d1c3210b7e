//! Flags of `eventbus serve` (defined with the settings they override,
//! in `config::flags`).

pub(crate) use crate::config::flags::ServeArgs;
