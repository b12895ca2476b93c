//! Job search: `client.jobs().list(&filter)` (`GET /v1/jobs`, the tenant's own jobs) and
//! `client.jobs().admin_list(&filter)` (`GET /v1/admin/jobs`, an operator key).

use serde::Deserialize;

use crate::{Client, ClientError, JobView, percent_encode};

/// What a search selects and which page. Every field is optional; `Default` lists the newest
/// jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this status now (`queued`, `running`, `succeeded`, `dead`, …).
    pub status: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this user's jobs.
    pub user: Option<String>,
    /// Only this tenant's (operators' searches only).
    pub tenant: Option<String>,
    /// Only this pipeline's steps.
    pub pipeline: Option<String>,
    /// Created at or after (Unix ms).
    pub created_after_ms: Option<u64>,
    /// Created before (Unix ms).
    pub created_before_ms: Option<u64>,
    /// At most this many (1..=200; the server's default is 50).
    pub limit: Option<usize>,
    /// A previous page's `next_cursor` (with the same filters).
    pub cursor: Option<String>,
}

impl JobFilter {
    fn query(&self) -> String {
        let mut q = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.push(format!("{k}={}", percent_encode(&v)));
            }
        };
        put("tenant", self.tenant.clone());
        put("pipeline", self.pipeline.clone());
        put("status", self.status.clone());
        put("kind", self.kind.clone());
        put("user", self.user.clone());
        put("created_after", self.created_after_ms.map(|v| v.to_string()));
        put("created_before", self.created_before_ms.map(|v| v.to_string()));
        put("limit", self.limit.map(|v| v.to_string()));
        put("cursor", self.cursor.clone());
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

/// A page of jobs, newest first. A page may hold fewer than asked (even none) and still have a
/// `next_cursor`: the server reads a bounded stretch of its index per page.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobList {
    /// The jobs (as `GET /v1/jobs/{id}` shows them, without usage and credits).
    pub jobs: Vec<JobView>,
    /// The next page's cursor; `None` when there is none.
    pub next_cursor: Option<String>,
}

/// The job search routes; see [`Client::jobs`].
#[derive(Clone, Copy, Debug)]
pub struct Jobs<'a> {
    client: &'a Client,
}

impl Client {
    /// Job search.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs { client: self }
    }
}

impl Jobs<'_> {
    /// One page of the tenant's own jobs.
    pub async fn list(&self, filter: &JobFilter) -> Result<JobList, ClientError> {
        self.page("/v1/jobs", filter).await
    }

    /// One page of any tenant's jobs (an operator key; `filter.tenant` absent: every tenant's).
    pub async fn admin_list(&self, filter: &JobFilter) -> Result<JobList, ClientError> {
        self.page("/v1/admin/jobs", filter).await
    }

    /// Up to `max` of the tenant's own jobs, following the pages.
    pub async fn list_all(&self, filter: &JobFilter, max: usize) -> Result<Vec<JobView>, ClientError> {
        let mut f = filter.clone();
        let mut out = Vec::new();
        while out.len() < max {
            f.limit = Some((max - out.len()).min(200));
            let page = self.list(&f).await?;
            out.extend(page.jobs);
            match page.next_cursor {
                Some(c) => f.cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    async fn page(&self, route: &str, filter: &JobFilter) -> Result<JobList, ClientError> {
        let path = format!("{route}{}", filter.query());
        self.client.send(reqwest::Method::GET, &path, None::<&()>, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_an_encoded_query() {
        assert_eq!(JobFilter::default().query(), "");
        let f = JobFilter {
            status: Some("dead".into()),
            user: Some("a b&c".into()),
            created_after_ms: Some(5),
            cursor: Some("x=".into()),
            ..Default::default()
        };
        assert_eq!(f.query(), "?status=dead&user=a%20b%26c&created_after=5&cursor=x%3D");
    }
}
