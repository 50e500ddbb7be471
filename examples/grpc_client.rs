//! A tonic gRPC client traced by `OtelClientLayer` around its `Channel`: CLIENT spans and
//! `rpc.client.call.duration`, the trace context in the metadata.
//!
//! ```text
//! cargo run --example grpc_client
//! ```
//!
//! It starts a plain tonic `helloworld.Greeter` server (no layer) on 127.0.0.1, calls it
//! through an instrumented channel (a success, a `NOT_FOUND`, a call past its deadline),
//! then prints the client spans and the duration points.

#[path = "../tests/grpc/greeter.rs"]
mod greeter;

use std::pin::Pin;
use std::time::Duration;

use greeter::greeter_client::GreeterClient;
use greeter::greeter_server::{Greeter, GreeterServer};
use greeter::{HelloReply, HelloRequest};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tower::ServiceBuilder;
use tower_otel_http::OtelClientLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Replies = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

/// The server side, uninstrumented: only `SayHello` matters here.
struct Svc;

#[tonic::async_trait]
impl Greeter for Svc {
    async fn say_hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let name = req.into_inner().name;
        match name.as_str() {
            "nobody" => Err(Status::not_found("no such person")),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(Response::new(HelloReply { message: name }))
            }
            _ => Ok(Response::new(HelloReply {
                message: format!("hello {name}"),
            })),
        }
    }

    type SayManyStream = Replies;

    async fn say_many(&self, _: Request<HelloRequest>) -> Result<Response<Replies>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn collect(
        &self,
        _: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<HelloReply>, Status> {
        Err(Status::unimplemented("not here"))
    }

    type ChatStream = Replies;

    async fn chat(&self, _: Request<Streaming<HelloRequest>>) -> Result<Response<Replies>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(Svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();

    // The channel's target, given once: tonic's generated clients send path-only URIs.
    let target = format!("http://{addr}");
    let channel = tonic::transport::Endpoint::from_shared(target.clone())?
        .connect()
        .await?;
    let channel = ServiceBuilder::new()
        .layer(
            OtelClientLayer::builder()
                .tracer_provider(&tracer_provider)
                .meter_provider(&meter_provider)
                .target(&target)
                .build(),
        )
        .service(channel);
    let mut client = GreeterClient::new(channel);

    let reply = client
        .say_hello(HelloRequest { name: "ada".into() })
        .await?;
    println!("SayHello(ada) -> {:?}", reply.into_inner().message);
    for name in ["nobody", "slow"] {
        let mut request = Request::new(HelloRequest { name: name.into() });
        request.set_timeout(Duration::from_millis(200));
        let err = client.say_hello(request).await.unwrap_err();
        println!("SayHello({name}) -> {:?} {:?}", err.code(), err.message());
    }

    println!("\nclient spans:\n");
    for span in spans.get_finished_spans()? {
        println!(
            "{} ({:?}, status {:?})",
            span.name, span.span_kind, span.status
        );
        for kv in &span.attributes {
            println!("    {} = {}", kv.key, kv.value);
        }
    }
    meter_provider.force_flush()?;
    println!("\nrpc.client.call.duration:\n");
    for resource in metrics.get_finished_metrics()? {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics() {
                if metric.name() != "rpc.client.call.duration" {
                    continue;
                }
                if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                    for point in h.data_points() {
                        let attrs: Vec<String> = point
                            .attributes()
                            .map(|kv| format!("{}={}", kv.key, kv.value))
                            .collect();
                        println!("    count {} {}", point.count(), attrs.join(" "));
                    }
                }
            }
        }
    }
    Ok(())
}
