//! WebSocket endpoints: echo (optionally closing after N messages) and a
//! variant that first reports the upgrade request.

use std::time::Duration;

use axum::{
    extract::{
        FromRequestParts,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::request::Parts,
    response::{IntoResponse, Response},
};

/// Offered by JupyterLab for kernel channels; accepted when offered.
pub const JUPYTER_SUBPROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// Largest accepted message (and frame).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Close code sent after `close_after` messages.
pub const CLOSE_AFTER_CODE: u16 = 4001;

/// How to behave once upgraded.
pub struct WsPlan {
    /// Text message to send first (the `ws/headers` report).
    pub greeting: Option<String>,
    /// Close with 4001 "bye" after this many echoed messages.
    pub close_after: Option<u64>,
}

/// Upgrade the request (or return the rejection, e.g. 400 for a plain GET).
pub async fn upgrade(parts: &mut Parts, plan: WsPlan) -> Response {
    let ws = match WebSocketUpgrade::from_request_parts(parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    ws.protocols([JUPYTER_SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_failed_upgrade(|e| println!("websocket upgrade failed: {e}"))
        .on_upgrade(move |socket| run(socket, plan))
}

async fn run(mut socket: WebSocket, plan: WsPlan) {
    if let Some(greeting) = plan.greeting
        && socket.send(Message::Text(greeting.into())).await.is_err()
    {
        return;
    }
    let mut echoed: u64 = 0;
    if plan.close_after == Some(0) {
        close_with_bye(socket).await;
        return;
    }
    while let Some(msg) = socket.recv().await {
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                let e = e.to_string();
                println!("websocket error: {e}");
                // tungstenite's CapacityError: answer like a server with a
                // size limit would (1009), instead of just dropping the TCP
                // connection.
                if e.contains("Message too long") || e.contains("Space limit exceeded") {
                    let frame = CloseFrame { code: 1009, reason: "message too big".into() };
                    if socket.send(Message::Close(Some(frame))).await.is_ok() {
                        drain(socket).await;
                    }
                }
                return;
            }
        };
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                if socket.send(msg).await.is_err() {
                    return;
                }
                echoed += 1;
                if plan.close_after == Some(echoed) {
                    close_with_bye(socket).await;
                    return;
                }
            }
            // tungstenite queues the pong itself; it goes out on the next
            // read or write.
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => {
                // tungstenite has queued a close frame echoing the received
                // code and reason; reading on flushes it and completes the
                // closing handshake.
                drain(socket).await;
                return;
            }
        }
    }
}

async fn close_with_bye(mut socket: WebSocket) {
    let frame = CloseFrame { code: CLOSE_AFTER_CODE, reason: "bye".into() };
    if socket.send(Message::Close(Some(frame))).await.is_ok() {
        drain(socket).await;
    }
}

/// Read until the peer's close reply (or EOF), for at most 5 s.
async fn drain(mut socket: WebSocket) {
    let _ =
        tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = socket.recv().await {} }).await;
}
