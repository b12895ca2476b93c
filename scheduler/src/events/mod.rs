//! Job events pushed to the platform: the fan-out of the pools' events streams
//! ([`hub`]), the cursor SSE clients resume from ([`cursor`]), and the payload both the SSE
//! routes (`crate::sse`) and webhooks send ([`payload`]).

pub mod cursor;
pub mod hub;
pub mod payload;

pub use cursor::Cursor;
pub use hub::EventHub;
pub use payload::EventPayload;
