//! A client of NCMEC's CyberTipline Reporting API (`https://report.cybertip.org/ispws`; the
//! test environment is `https://exttest.cybertip.org/ispws`): HTTP basic authentication, XML
//! documents, and a report made in steps — `POST /submit` opens it (a `<report>` document;
//! the answer carries its `reportId`), `POST /upload` adds a file (multipart `id` and `file`;
//! the answer carries a `fileId`), `POST /fileinfo` describes a file (a `<fileDetails>`
//! document), `POST /finish` closes it (form `id`). Every answer is a `<reportResponse>` (or
//! `<reportDoneResponse>`) with a `responseCode`: 0 is success.

use std::time::Duration;

use crate::error::SafetyError;

/// Where and as whom to report.
#[derive(Clone, Debug)]
pub struct CyberTiplineConfig {
    /// The API's base URL, without a trailing slash.
    pub url: String,
    /// The username NCMEC issued.
    pub username: String,
    /// Its password.
    pub password: String,
    /// The reporting person (the ESP's contact): first name, last name, email.
    pub reporter: (String, String, String),
}

/// Why a step failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum TiplineError {
    /// The network, a 5xx, a server error (1000), or an authentication refusal (2000: a
    /// configuration an operator fixes): try again later.
    #[error("{0}")]
    Transient(String),
    /// The report itself was refused (validation, 4100): retrying the same report cannot help.
    #[error("{0}")]
    Refused(String),
    /// The report the step named does not exist there (5001): open it again.
    #[error("the authority has no report {0}")]
    UnknownReport(String),
    /// The report was already finished (5102): the step's work is done.
    #[error("report {0} was already finished")]
    AlreadyFinished(String),
}

/// A response's code, description and ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// `responseCode` (0: success).
    pub code: i64,
    /// `responseDescription`.
    pub description: String,
    /// `reportId`.
    pub report_id: Option<String>,
    /// `fileId`.
    pub file_id: Option<String>,
}

/// The text of the first `<tag>…</tag>` in `xml`, unescaped.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}");
    let mut from = 0;
    while let Some(i) = xml[from..].find(&open) {
        let start = from + i;
        let after = &xml[start + open.len()..];
        // `<tag>` or `<tag attr="…">`, not `<tagLonger>`.
        if after.starts_with('>') || after.starts_with(' ') {
            let body_start = start + open.len() + after.find('>')? + 1;
            let close = format!("</{tag}>");
            let end = xml[body_start..].find(&close)? + body_start;
            return Some(unescape(&xml[body_start..end]));
        }
        from = start + open.len();
    }
    None
}

/// Escapes text for an XML element or attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\n' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

/// Parses a response document.
pub fn parse_answer(xml: &str) -> Option<Answer> {
    Some(Answer {
        code: xml_text(xml, "responseCode")?.parse().ok()?,
        description: xml_text(xml, "responseDescription").unwrap_or_default(),
        report_id: xml_text(xml, "reportId"),
        file_id: xml_text(xml, "fileId"),
    })
}

/// What a report says.
#[derive(Clone, Debug)]
pub struct ReportDocument<'a> {
    /// The NCMEC incident type (`Child Pornography (possession, manufacture, and distribution)`).
    pub incident_type: &'a str,
    /// When the incident happened (RFC 3339).
    pub incident_at: String,
    /// The platform (the ESP's service the account is on).
    pub esp_service: &'a str,
    /// The account's id on it.
    pub esp_identifier: &'a str,
    /// Free text: what matched.
    pub additional_info: String,
}

/// One file's details.
#[derive(Clone, Debug)]
pub struct FileDocument<'a> {
    /// The authority's report id.
    pub report_id: &'a str,
    /// The authority's file id.
    pub file_id: &'a str,
    /// The file's name as found.
    pub name: &'a str,
    /// Whether a person at the platform looked at it (a reviewer's confirmation).
    pub viewed_by_esp: bool,
    /// Its MD5.
    pub md5: &'a str,
    /// Free text: the match.
    pub additional_info: String,
}

/// The client.
#[derive(Clone, Debug)]
pub struct CyberTipline {
    cfg: CyberTiplineConfig,
    http: reqwest::Client,
}

impl CyberTipline {
    /// A client for `cfg`.
    pub fn new(cfg: CyberTiplineConfig) -> Result<Self, SafetyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SafetyError::Evidence(format!("reporting client: {e}")))?;
        Ok(Self { cfg, http })
    }

    /// The report document.
    pub fn report_xml(&self, r: &ReportDocument<'_>) -> String {
        let (first, last, email) = &self.cfg.reporter;
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <report xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
             xsi:noNamespaceSchemaLocation=\"https://report.cybertip.org/ispws/xsd\">\
             <incidentSummary><incidentType>{}</incidentType>\
             <incidentDateTime>{}</incidentDateTime></incidentSummary>\
             <reporter><reportingPerson><firstName>{}</firstName><lastName>{}</lastName>\
             <email>{}</email></reportingPerson></reporter>\
             <personOrUserReported><espIdentifier>{}</espIdentifier>\
             <espService>{}</espService></personOrUserReported>\
             <additionalInfo>{}</additionalInfo></report>",
            escape(r.incident_type),
            escape(&r.incident_at),
            escape(first),
            escape(last),
            escape(email),
            escape(r.esp_identifier),
            escape(r.esp_service),
            escape(&r.additional_info),
        )
    }

    /// The file details document.
    pub fn file_xml(f: &FileDocument<'_>) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<fileDetails>\
             <reportId>{}</reportId><fileId>{}</fileId>\
             <originalFileName>{}</originalFileName>\
             <fileViewedByEsp>{}</fileViewedByEsp>\
             <publiclyAvailable>false</publiclyAvailable>\
             <fileRelevance>Reported</fileRelevance>\
             <originalFileHash hashType=\"MD5\">{}</originalFileHash>\
             <additionalInfo>{}</additionalInfo></fileDetails>",
            escape(f.report_id),
            escape(f.file_id),
            escape(f.name),
            f.viewed_by_esp,
            escape(f.md5),
            escape(&f.additional_info),
        )
    }

    async fn send(&self, step: &str, req: reqwest::RequestBuilder) -> Result<Answer, TiplineError> {
        let resp = req
            .basic_auth(&self.cfg.username, Some(&self.cfg.password))
            .send()
            .await
            .map_err(|e| TiplineError::Transient(format!("{step}: {e}")))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| TiplineError::Transient(format!("{step}: reading the answer: {e}")))?;
        let answer = parse_answer(&body);
        match (status.as_u16(), answer) {
            (_, Some(a)) if a.code == 0 => Ok(a),
            (_, Some(a)) => {
                let what = format!("{step}: code {} ({})", a.code, a.description);
                Err(match a.code {
                    5001 => TiplineError::UnknownReport(a.report_id.unwrap_or_default()),
                    5102 => TiplineError::AlreadyFinished(a.report_id.unwrap_or_default()),
                    1000..=3999 => TiplineError::Transient(what),
                    _ => TiplineError::Refused(what),
                })
            }
            (s, None) if s == 401 || s == 403 || s == 429 || s >= 500 => {
                Err(TiplineError::Transient(format!("{step}: HTTP {s}")))
            }
            (s, None) => Err(TiplineError::Refused(format!(
                "{step}: HTTP {s} without an answer document"
            ))),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.cfg.url.trim_end_matches('/'))
    }

    /// `POST /submit`: opens a report; its id.
    pub async fn submit(&self, xml: String) -> Result<String, TiplineError> {
        let req = self
            .http
            .post(self.url("submit"))
            .header("content-type", "text/xml; charset=utf-8")
            .body(xml);
        self.send("submit", req)
            .await?
            .report_id
            .ok_or_else(|| TiplineError::Transient("submit: the answer has no reportId".into()))
    }

    /// `POST /upload`: adds a file to an open report; its file id.
    pub async fn upload(&self, report_id: &str, name: &str, bytes: Vec<u8>) -> Result<String, TiplineError> {
        let form = reqwest::multipart::Form::new().text("id", report_id.to_owned()).part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
        );
        let req = self.http.post(self.url("upload")).multipart(form);
        self.send("upload", req)
            .await?
            .file_id
            .ok_or_else(|| TiplineError::Transient("upload: the answer has no fileId".into()))
    }

    /// `POST /fileinfo`: describes an uploaded file.
    pub async fn file_info(&self, xml: String) -> Result<(), TiplineError> {
        let req = self
            .http
            .post(self.url("fileinfo"))
            .header("content-type", "text/xml; charset=utf-8")
            .body(xml);
        self.send("fileinfo", req).await.map(|_| ())
    }

    /// `POST /finish`: closes the report (no file can be added after).
    pub async fn finish(&self, report_id: &str) -> Result<(), TiplineError> {
        let req = self.http.post(self.url("finish")).form(&[("id", report_id)]);
        match self.send("finish", req).await {
            Ok(_) | Err(TiplineError::AlreadyFinished(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_text_escapes() {
        let a = parse_answer(
            "<?xml version=\"1.0\"?><reportResponse><responseCode>0</responseCode>\
             <responseDescription>Success</responseDescription><reportId>4564654</reportId>\
             </reportResponse>",
        );
        assert_eq!(
            a,
            Some(Answer {
                code: 0,
                description: "Success".into(),
                report_id: Some("4564654".into()),
                file_id: None
            })
        );
        assert_eq!(
            xml_text("<a><hash x=\"1\">ab</hash></a>", "hash").as_deref(),
            Some("ab")
        );
        assert_eq!(xml_text("<a><hashType>x</hashType></a>", "hash"), None);
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(xml_text("<t>a&lt;b&amp;c</t>", "t").as_deref(), Some("a<b&c"));
        assert!(parse_answer("<html>502</html>").is_none());
    }
}
