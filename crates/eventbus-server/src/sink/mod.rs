//! Where `consume` sends events besides stdout and `--exec`: the HTTP push
//! sink ([`http`]).

pub(crate) mod http;
