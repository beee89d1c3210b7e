//! The types of the composed stack (see the module docs of
//! [`crate::layer`] for the order).

use super::{Either, MaxEvents, Measured, Timeout, Traced};
use crate::catalog::Validating;
use crate::pg::Deduplicated;

/// The optional layers inside yours, around the handler `H`: validation,
/// then the inbox, then the max-events limit (`Either::Right` where off).
pub type Policies<H> = Either<Validating<WithInbox<H>>, WithInbox<H>>;

/// The inbox and max-events layers around `H` (part of [`Policies`]).
pub type WithInbox<H> = Either<Deduplicated<WithLimit<H>>, WithLimit<H>>;

/// The max-events layer around `H` (part of [`Policies`]).
pub type WithLimit<H> = Either<MaxEvents<H>, H>;

/// The layers outside yours, around `S`: the trace span, the metrics and
/// the attempt timeout.
pub type Outer<S> = Traced<Measured<Either<Timeout<S>, S>>>;
