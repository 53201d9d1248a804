//! Operator control: one set of requests and responses ([`protocol`]), served by one
//! actor ([`Controller`]) behind two encodings: JSON over the admin HTTP API and
//! MessagePack frames over the local control socket ([`socket`]). [`client`] is the
//! other end, used by `warden ctl`.

pub mod client;
mod controller;
pub mod protocol;
mod request;
pub mod socket;

pub use controller::{Controller, ControllerConfig, Liveness};
pub use request::control;
