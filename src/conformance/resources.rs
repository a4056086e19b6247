//! Reading the fixture resources and matching the fixture template.

use rmcp::model::{ReadResourceResult, ResourceContents};

use super::catalog::*;

/// The id in `test://template/{id}/data`, if `uri` matches the template. The id must be one
/// non-empty path segment: `test://template/a/b/data` is not a match.
pub fn template_id(uri: &str) -> Option<&str> {
    let id = uri
        .strip_prefix(TEMPLATE_PREFIX)?
        .strip_suffix(TEMPLATE_SUFFIX)?;
    (!id.is_empty() && !id.contains(['/', '?', '#'])).then_some(id)
}

/// The contents of a fixture resource, or `None` if `uri` is not one.
pub fn read(uri: &str) -> Option<ReadResourceResult> {
    let contents = match uri {
        STATIC_TEXT_URI => text(uri, "text/plain", STATIC_TEXT.to_owned()),
        STATIC_BINARY_URI => ResourceContents::blob(PNG_BASE64, uri).with_mime_type("image/png"),
        WATCHED_URI => text(uri, "text/plain", WATCHED_TEXT.to_owned()),
        _ => text(uri, "application/json", template_data(template_id(uri)?)),
    };
    Some(ReadResourceResult::new(vec![contents]))
}

/// True if `uri` names a fixture resource (direct or templated).
pub fn owns(uri: &str) -> bool {
    matches!(uri, STATIC_TEXT_URI | STATIC_BINARY_URI | WATCHED_URI) || template_id(uri).is_some()
}

/// Text contents with a MIME type.
fn text(uri: &str, mime_type: &str, body: String) -> ResourceContents {
    ResourceContents::text(body, uri).with_mime_type(mime_type)
}

/// `{"id":"<id>","templateTest":true,"data":"Data for ID: <id>"}` in exactly this key order
/// (serde_json's map would sort the keys), with the id JSON-escaped.
fn template_data(id: &str) -> String {
    let quoted = serde_json::Value::from(id).to_string();
    let data = serde_json::Value::from(format!("Data for ID: {id}")).to_string();
    format!(r#"{{"id":{quoted},"templateTest":true,"data":{data}}}"#)
}
