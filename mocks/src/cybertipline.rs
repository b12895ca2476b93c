//! A mock of NCMEC's CyberTipline Reporting API, on the mock server under
//! `/cybertipline/ispws`: HTTP basic authentication ([`USERNAME`] / [`PASSWORD`]), XML in and
//! out, and a report made in the real API's steps — `POST /submit` (a `<report>` document:
//! well-formed, with an incident type NCMEC knows, an incident time, and a reporting person's
//! email, or `4100`), `POST /upload` (multipart `id` and `file`), `POST /fileinfo` (a
//! `<fileDetails>` document naming a report and a file it holds), `POST /finish` (form `id`),
//! `POST /retract`, `GET /status`. A report that does not exist answers `5001`, one already
//! finished `5102`.
//!
//! For tests and the demo: `GET /_mock/cybertipline` lists what it received (file digests, not
//! files), and `PUT /_mock/cybertipline/faults {"fail_next": N}` answers the next N requests
//! with a 503, as an outage would.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The username the mock accepts.
pub const USERNAME: &str = "esp-demo";
/// Its password.
pub const PASSWORD: &str = "esp-demo-password";

/// Incident types NCMEC's schema lists.
const INCIDENT_TYPES: &[&str] = &[
    "Child Pornography (possession, manufacture, and distribution)",
    "Child Sex Trafficking",
    "Child Sex Tourism",
    "Child Sexual Molestation",
    "Misleading Domain Name",
    "Misleading Words or Digital Images on the Internet",
    "Online Enticement of Children for Sexual Acts",
    "Unsolicited Obscene Material Sent to a Child",
];

/// A file the mock received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TipFile {
    /// Its file id.
    pub file_id: String,
    /// The name it was sent with.
    pub name: String,
    /// Bytes.
    pub size: usize,
    /// MD5 of the bytes.
    pub md5: String,
    /// Whether `/fileinfo` described it.
    pub described: bool,
    /// The MD5 the description named.
    pub described_md5: Option<String>,
    /// Whether the description said the ESP viewed it.
    pub viewed_by_esp: Option<bool>,
}

/// A report the mock received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TipReport {
    /// Its id.
    pub report_id: u64,
    /// The incident type.
    pub incident_type: String,
    /// When the incident happened, as sent.
    pub incident_date_time: String,
    /// The account reported.
    pub esp_identifier: Option<String>,
    /// The service it is on.
    pub esp_service: Option<String>,
    /// The reporter's email.
    pub reporter_email: String,
    /// The free text sent.
    pub additional_info: Option<String>,
    /// Files.
    pub files: Vec<TipFile>,
    /// Finished.
    pub finished: bool,
    /// Retracted.
    pub retracted: bool,
}

/// What the mock holds.
#[derive(Debug, Default)]
pub struct TipState {
    reports: Mutex<BTreeMap<u64, TipReport>>,
    fail_next: Mutex<u32>,
    next: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type St = std::sync::Arc<super::MockState>;

/// The routes.
pub(crate) fn routes() -> Router<St> {
    Router::new()
        .route("/cybertipline/ispws/status", get(status))
        .route("/cybertipline/ispws/submit", post(submit))
        .route("/cybertipline/ispws/upload", post(upload))
        .route("/cybertipline/ispws/fileinfo", post(fileinfo))
        .route("/cybertipline/ispws/finish", post(finish))
        .route("/cybertipline/ispws/retract", post(retract))
        .route("/_mock/cybertipline", get(received))
        .route("/_mock/cybertipline/faults", put(faults))
}

fn answer(http: StatusCode, code: u32, description: &str, extra: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><reportResponse>\
         <responseCode>{code}</responseCode><responseDescription>{description}</responseDescription>\
         {extra}</reportResponse>"
    );
    (http, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// Checks basic authentication and the injected outage; `Some` is the answer to give instead.
fn gate(state: &St, headers: &HeaderMap) -> Option<Response> {
    {
        let mut n = lock(&state.tipline.fail_next);
        if *n > 0 {
            *n -= 1;
            return Some((StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response());
        }
    }
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{PASSWORD}"))
    );
    let ok = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    (!ok).then(|| StatusCode::UNAUTHORIZED.into_response())
}

async fn status(State(s): State<St>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    answer(StatusCode::OK, 0, &format!("Remote User : {USERNAME}"), "")
}

/// A document's text by element path (`report/incidentSummary/incidentType`), the first of
/// each; attributes of an element as `path@name`. `Err` when it is not well-formed XML.
fn parse(xml: &str) -> Result<(String, BTreeMap<String, String>), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut root = None;
    let mut out = BTreeMap::new();
    let mut text = String::new();
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if path.is_empty() {
                    if root.is_some() {
                        return Err("more than one root element".into());
                    }
                    root = Some(name.clone());
                }
                path.push(name);
                text.clear();
                for a in e.attributes() {
                    let a = a.map_err(|e| e.to_string())?;
                    let key = format!("{}@{}", path.join("/"), String::from_utf8_lossy(a.key.as_ref()));
                    out.entry(key)
                        .or_insert_with(|| String::from_utf8_lossy(&a.value).into_owned());
                }
            }
            Event::End(_) => {
                let t = text.trim();
                if !t.is_empty() {
                    out.entry(path.join("/")).or_insert_with(|| t.to_owned());
                }
                text.clear();
                path.pop();
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                out.entry(format!("{}/{name}", path.join("/"))).or_default();
            }
            Event::Text(t) => text.push_str(&t.xml10_content().map_err(|e| e.to_string())?),
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| e.to_string())?;
                let c = match name.as_ref() {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    n => n
                        .strip_prefix("#x")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .or_else(|| n.strip_prefix('#').and_then(|d| d.parse().ok()))
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("unknown entity &{n};"))?,
                };
                text.push(c);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !path.is_empty() {
        return Err(format!("unclosed element <{}>", path.join("/")));
    }
    Ok((root.ok_or("no root element")?, out))
}

fn invalid(why: &str) -> Response {
    answer(StatusCode::BAD_REQUEST, 4100, &format!("Validation failed: {why}"), "")
}

fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (t.ends_with('Z') || t[19..].contains(['+', '-']))
        && t[..4].bytes().chain(t[5..7].bytes()).all(|c| c.is_ascii_digit())
}

async fn submit(State(s): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return invalid("the document is not UTF-8");
    };
    let (root, f) = match parse(text) {
        Ok(x) => x,
        Err(e) => return invalid(&format!("not well-formed XML: {e}")),
    };
    if root != "report" {
        return invalid("the root element must be <report>");
    }
    let get = |p: &str| f.get(&format!("report/{p}")).cloned();
    let Some(incident_type) = get("incidentSummary/incidentType") else {
        return invalid("incidentSummary/incidentType is required");
    };
    if !INCIDENT_TYPES.contains(&incident_type.as_str()) {
        return invalid("incidentSummary/incidentType is not one of the schema's");
    }
    let Some(when) = get("incidentSummary/incidentDateTime").filter(|t| is_rfc3339(t)) else {
        return invalid("incidentSummary/incidentDateTime is required, as an xs:dateTime");
    };
    let Some(email) = get("reporter/reportingPerson/email").filter(|e| e.contains('@')) else {
        return invalid("reporter/reportingPerson/email is required");
    };
    let id = {
        let mut n = lock(&s.tipline.next);
        *n += 1;
        4_564_000 + *n
    };
    lock(&s.tipline.reports).insert(
        id,
        TipReport {
            report_id: id,
            incident_type,
            incident_date_time: when,
            esp_identifier: get("personOrUserReported/espIdentifier"),
            esp_service: get("personOrUserReported/espService"),
            reporter_email: email,
            additional_info: get("additionalInfo"),
            files: Vec::new(),
            finished: false,
            retracted: false,
        },
    );
    answer(StatusCode::OK, 0, "Success", &format!("<reportId>{id}</reportId>"))
}

/// The report `id` names, open: its number, or the answer to give.
fn open_report(s: &St, id: Option<&str>) -> Result<u64, Box<Response>> {
    let id: u64 = id
        .and_then(|i| i.trim().parse().ok())
        .ok_or_else(|| Box::new(invalid("id is required")))?;
    match lock(&s.tipline.reports).get(&id) {
        None => Err(Box::new(answer(
            StatusCode::BAD_REQUEST,
            5001,
            "Report does not exist",
            "",
        ))),
        Some(r) if r.finished || r.retracted => Err(Box::new(answer(
            StatusCode::BAD_REQUEST,
            5102,
            "Report already finished",
            &format!("<reportId>{id}</reportId>"),
        ))),
        Some(_) => Ok(id),
    }
}

async fn upload(State(s): State<St>, headers: HeaderMap, req: Request) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let Ok(mut form) = axum::extract::Multipart::from_request(req, &()).await else {
        return invalid("expected multipart/form-data with id and file");
    };
    let (mut id, mut file) = (None, None);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("id") => id = field.text().await.ok(),
            Some("file") => {
                let name = field.file_name().unwrap_or("file").to_owned();
                file = field.bytes().await.ok().map(|b| (name, b));
            }
            _ => {}
        }
    }
    let report = match open_report(&s, id.as_deref()) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let Some((name, bytes)) = file else {
        return invalid("file is required");
    };
    let md5 = format!("{:032x}", md5_of(&bytes));
    let file_id = format!(
        "{:x}",
        sha2::Sha256::digest([report.to_be_bytes().as_slice(), &bytes].concat())
    )[..32]
        .to_owned();
    let mut reports = lock(&s.tipline.reports);
    let Some(r) = reports.get_mut(&report) else {
        return answer(StatusCode::BAD_REQUEST, 5001, "Report does not exist", "");
    };
    if !r.files.iter().any(|f| f.file_id == file_id) {
        r.files.push(TipFile {
            file_id: file_id.clone(),
            name,
            size: bytes.len(),
            md5: md5.clone(),
            described: false,
            described_md5: None,
            viewed_by_esp: None,
        });
    }
    answer(
        StatusCode::OK,
        0,
        "Success",
        &format!("<reportId>{report}</reportId><fileId>{file_id}</fileId><hash>{md5}</hash>"),
    )
}

fn md5_of(bytes: &[u8]) -> u128 {
    use md5::Digest as _;
    u128::from_be_bytes(md5::Md5::digest(bytes).into())
}

async fn fileinfo(State(s): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return invalid("the document is not UTF-8");
    };
    let (root, f) = match parse(text) {
        Ok(x) => x,
        Err(e) => return invalid(&format!("not well-formed XML: {e}")),
    };
    if root != "fileDetails" {
        return invalid("the root element must be <fileDetails>");
    }
    let report = match open_report(&s, f.get("fileDetails/reportId").map(String::as_str)) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let file_id = f.get("fileDetails/fileId").cloned().unwrap_or_default();
    let mut reports = lock(&s.tipline.reports);
    let Some(file) = reports
        .get_mut(&report)
        .and_then(|r| r.files.iter_mut().find(|x| x.file_id == file_id))
    else {
        return invalid("fileId names no file of this report");
    };
    if f.get("fileDetails/originalFileHash@hashType").map(String::as_str) != Some("MD5") {
        return invalid("originalFileHash needs hashType=\"MD5\"");
    }
    file.described = true;
    file.described_md5 = f.get("fileDetails/originalFileHash").cloned();
    file.viewed_by_esp = f.get("fileDetails/fileViewedByEsp").map(|v| v == "true");
    answer(StatusCode::OK, 0, "Success", &format!("<reportId>{report}</reportId>"))
}

#[derive(Deserialize)]
struct IdForm {
    id: Option<String>,
}

async fn finish(State(s): State<St>, headers: HeaderMap, axum::Form(form): axum::Form<IdForm>) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let report = match open_report(&s, form.id.as_deref()) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let mut reports = lock(&s.tipline.reports);
    let Some(r) = reports.get_mut(&report) else {
        return answer(StatusCode::BAD_REQUEST, 5001, "Report does not exist", "");
    };
    r.finished = true;
    let files: String = r
        .files
        .iter()
        .map(|f| format!("<fileId>{}</fileId>", f.file_id))
        .collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><reportDoneResponse>\
         <responseCode>0</responseCode><reportId>{report}</reportId><files>{files}</files></reportDoneResponse>"
    );
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

async fn retract(State(s): State<St>, headers: HeaderMap, axum::Form(form): axum::Form<IdForm>) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let report = match open_report(&s, form.id.as_deref()) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if let Some(r) = lock(&s.tipline.reports).get_mut(&report) {
        r.retracted = true;
    }
    answer(StatusCode::OK, 0, "Success", &format!("<reportId>{report}</reportId>"))
}

async fn received(State(s): State<St>) -> Response {
    let reports: Vec<TipReport> = lock(&s.tipline.reports).values().cloned().collect();
    axum::Json(serde_json::json!({ "reports": reports })).into_response()
}

#[derive(Deserialize)]
struct FaultBody {
    fail_next: u32,
}

async fn faults(State(s): State<St>, axum::Json(b): axum::Json<FaultBody>) -> Response {
    *lock(&s.tipline.fail_next) = b.fail_next;
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_by_path_and_bad_ones_are_refused() {
        let (root, f) = parse(
            "<?xml version=\"1.0\"?><report><incidentSummary><incidentType>a &amp; b</incidentType>\
             </incidentSummary><h hashType=\"MD5\">x</h><e/></report>",
        )
        .unwrap_or_default();
        assert_eq!(root, "report");
        assert_eq!(
            f.get("report/incidentSummary/incidentType").map(String::as_str),
            Some("a & b")
        );
        assert_eq!(f.get("report/h@hashType").map(String::as_str), Some("MD5"));
        assert!(f.contains_key("report/e"));
        assert!(parse("<report><a></b></report>").is_err());
        assert!(parse("<report><a>").is_err());
        assert!(is_rfc3339("2026-12-07T10:00:00Z") && !is_rfc3339("yesterday"));
    }
}
