//! Job events pushed to the platform: the fan-out of the pools' events streams
//! ([`hub`]), the SSE routes ([`sse`]), and the payload both they and webhooks send
//! ([`payload`]).

pub mod cursor;
pub mod hub;
pub mod payload;
pub mod sse;

pub use cursor::Cursor;
pub use hub::EventHub;
pub use payload::EventPayload;
