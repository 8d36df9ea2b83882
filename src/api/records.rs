//! A function's records as CSV (`GET /api/v1/functions/{name}/invocations?format=csv`),
//! for spreadsheets and scripts; the JSON form is the records themselves.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::store::invocations::Invocation;

/// The CSV columns, in order: every field of a record but its output.
const HEADER: &str = "request_id,function,version,started_at,duration_ms,billed_ms,memory_mb,\
max_memory_used_mb,init_ms,wait_ms,cold,start,status,http_status,billed,trigger,attempt\n";

pub(super) fn csv_response(records: &[Invocation]) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"openlambda-invocations.csv\"",
            ),
        ],
        csv(records),
    )
        .into_response()
}

/// A header line, then a line per record. No field needs quoting: names,
/// versions, times and status words hold no comma, quote or line break
/// (function names and versions are validated at deploy). An empty field
/// is a null.
fn csv(records: &[Invocation]) -> String {
    fn opt<T: ToString>(value: &Option<T>) -> String {
        value.as_ref().map(T::to_string).unwrap_or_default()
    }
    let mut out = String::from(HEADER);
    for r in records {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.request_id,
            r.function,
            r.version,
            r.started_at.to_rfc3339(),
            r.duration_ms,
            r.billed_ms,
            r.memory_mb,
            opt(&r.max_memory_used_mb),
            opt(&r.init_ms),
            r.wait_ms,
            r.cold,
            opt(&r.start),
            r.status,
            r.http_status,
            r.billed,
            r.trigger,
            r.attempt,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_record_under_the_header() {
        let warm = crate::testing::sample_invocation("f");
        let old = Invocation {
            start: None,
            max_memory_used_mb: None,
            cold: true,
            init_ms: Some(30),
            ..crate::testing::sample_invocation("f")
        };
        let text = csv(&[warm.clone(), old]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let columns: Vec<&str> = lines[0].split(',').collect();
        let start = columns.iter().position(|c| *c == "start").unwrap();
        let init = columns.iter().position(|c| *c == "init_ms").unwrap();
        for line in &lines[1..] {
            assert_eq!(line.split(',').count(), columns.len(), "{line}");
        }
        let warm_fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(warm_fields[0], warm.request_id.to_string());
        assert_eq!(warm_fields[start], "running");
        let old_fields: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(old_fields[start], "", "a record older than start has none");
        assert_eq!(old_fields[init], "30");
    }
}
