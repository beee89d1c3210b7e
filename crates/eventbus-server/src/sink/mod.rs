//! Where `consume` sends events besides stdout and `--exec`: the HTTP push
//! sink ([`http`]) and where its headers come from ([`headers`]).

pub(crate) mod headers;
pub(crate) mod http;
