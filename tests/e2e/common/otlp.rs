//! An OTLP/HTTP trace receiver for the tests, built on the official OTLP protobuf definitions
//! (`opentelemetry-proto`, decoded with prost): no collector distribution is installable from the
//! registries the suite may use. It keeps every span it is sent, flattened.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// One received span, flattened.
#[derive(Clone, Debug)]
pub struct Got {
    pub service: String,
    pub name: String,
    pub trace: String,
    pub id: String,
    pub parent: String,
    /// Every attribute and event attribute, as text, and the events' names.
    pub text: Vec<String>,
    pub attrs: BTreeMap<String, String>,
}

fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), value_text(&kv.value))).collect()
}

pub type Received = Arc<Mutex<Vec<Got>>>;

/// Every span of an export request, flattened.
fn flatten(req: ExportTraceServiceRequest) -> Vec<Got> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let res = rs.resource.map(|r| attrs(&r.attributes)).unwrap_or_default();
        let service = res.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let a = attrs(&s.attributes);
                let mut text: Vec<String> = a.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect();
                for e in &s.events {
                    text.push(e.name.clone());
                    text.extend(attrs(&e.attributes).into_values());
                }
                out.push(Got {
                    service: service.clone(),
                    name: s.name.clone(),
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    text,
                    attrs: a,
                });
            }
        }
    }
    out
}

/// An OTLP/HTTP trace receiver on a free loopback port: `POST /v1/traces` (protobuf).
pub async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                };
                store.lock().expect("the receiver's store").extend(flatten(req));
                (
                    axum::http::StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// The trace service of the gRPC receiver.
struct GrpcTraces(Received);

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = flatten(req.into_inner());
        self.0.lock().expect("the receiver's store").extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC trace receiver on a free loopback port (the collector's `TraceService`).
pub async fn grpc_receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let service = TraceServiceServer::new(GrpcTraces(got.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    (format!("http://{addr}"), got)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
