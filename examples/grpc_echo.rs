//! The demo's echo upstream on its own, for `bench/run.sh`'s gRPC rows:
//! HTTP/1.1 and cleartext HTTP/2 on 127.0.0.1:PORT; a gRPC call gets its
//! request message back with `grpc-status: 0`.
//!
//! ```sh
//! cargo run --release --example grpc_echo 50051
//! ```

#![allow(clippy::unwrap_used)]

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).unwrap().parse().unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    authgate::demo::echo::serve(listener).await;
}
