//! The proxy through real sockets: a test hub in front of small upstream servers.
//! One test binary (each file under tests/ would be another binary to link).

mod common;
mod http;
mod lane;
mod lifecycle;
mod limits;
mod rstudio;
mod websocket;
