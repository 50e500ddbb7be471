//! A tonic gRPC server traced by `OtelLayer`: one layer for the whole server, RPC spans
//! and `rpc.server.call.duration` with the status from the trailers.
//!
//! ```text
//! cargo run --example grpc_server
//! ```
//!
//! It serves the `helloworld.Greeter` service (protoc-free: the generated code is in
//! `tests/grpc/greeter.rs`) on 127.0.0.1, calls itself three times (a success, a
//! `NOT_FOUND`, a server stream), then prints the server spans and exits.

#[path = "../tests/grpc/greeter.rs"]
mod greeter;

use std::pin::Pin;
use std::time::Duration;

use greeter::greeter_client::GreeterClient;
use greeter::greeter_server::{Greeter, GreeterServer};
use greeter::{HelloReply, HelloRequest};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tower_otel_http::OtelLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Replies = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

struct Svc;

#[tonic::async_trait]
impl Greeter for Svc {
    async fn say_hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let name = req.into_inner().name;
        if name == "nobody" {
            return Err(Status::not_found("no such person"));
        }
        Ok(Response::new(HelloReply {
            message: format!("hello {name}"),
        }))
    }

    type SayManyStream = Replies;

    async fn say_many(&self, req: Request<HelloRequest>) -> Result<Response<Replies>, Status> {
        let name = req.into_inner().name;
        let replies = tokio_stream::iter(0..3).map(move |i| {
            Ok(HelloReply {
                message: format!("{name} #{i}"),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn collect(
        &self,
        req: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<HelloReply>, Status> {
        let mut names = Vec::new();
        let mut stream = req.into_inner();
        while let Some(request) = stream.next().await {
            names.push(request?.name);
        }
        Ok(Response::new(HelloReply {
            message: names.join(", "),
        }))
    }

    type ChatStream = Replies;

    async fn chat(
        &self,
        req: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<Replies>, Status> {
        let echo = req
            .into_inner()
            .map(|request| request.map(|r| HelloReply { message: r.name }));
        Ok(Response::new(Box::pin(echo)))
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();

    // One layer for the whole server: gRPC calls get RPC spans, anything else HTTP ones.
    let layer = OtelLayer::builder().tracer_provider(&provider).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(GreeterServer::new(Svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    println!("serving helloworld.Greeter on http://{addr}\n");

    let mut client = GreeterClient::connect(format!("http://{addr}")).await?;
    let reply = client
        .say_hello(HelloRequest { name: "ada".into() })
        .await?;
    println!("SayHello(ada) -> {:?}", reply.into_inner().message);
    let err = client
        .say_hello(HelloRequest {
            name: "nobody".into(),
        })
        .await
        .unwrap_err();
    println!("SayHello(nobody) -> {:?} {:?}", err.code(), err.message());
    let mut stream = client
        .say_many(HelloRequest { name: "bob".into() })
        .await?
        .into_inner();
    while let Some(reply) = stream.message().await? {
        println!("SayMany(bob) -> {:?}", reply.message);
    }

    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("\nserver spans:\n");
    for span in exporter.get_finished_spans()? {
        println!(
            "{} ({:?}, status {:?})",
            span.name, span.span_kind, span.status
        );
        for kv in &span.attributes {
            println!("    {} = {}", kv.key, kv.value);
        }
    }
    Ok(())
}
