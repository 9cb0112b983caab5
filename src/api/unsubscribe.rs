//! One-click unsubscribe (RFC 8058) for the links in `List-Unsubscribe`
//! headers of the `smtp` channel.
//!
//! - `POST /v1/unsubscribe/{TOKEN}` with the form body
//!   `List-Unsubscribe=One-Click` (what mailbox providers send, and what the
//!   confirmation page's button sends) opts the contact out of the channel
//!   named in the token, with the same store operation as
//!   `POST /v1/contacts/{id}/unsubscribe {"channel": …}`: the opt-out is
//!   recorded and the contact's queued messages on that channel are
//!   cancelled. Answers 200 with a short HTML page, also when the contact
//!   was already opted out or no longer exists (the link did its job).
//! - `GET /v1/unsubscribe/{TOKEN}` only shows a page with a confirm button:
//!   mail scanners and link previewers follow links, and must not
//!   unsubscribe anyone.
//!
//! No bearer token: the signed token is the authorisation
//! (`channels::smtp::token`). A malformed or forged token gets 404 "this
//! link is not valid", the same for every cause. Bodies are limited like
//! every API body.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::ApiState;
use crate::channels::smtp::html::escape;
use crate::channels::smtp::token::Unsubscribe;
use crate::store::StoreError;

/// `GET /v1/unsubscribe/{token}`: a confirmation page; changes nothing.
pub async fn page(State(st): State<ApiState>, Path(token): Path<String>) -> Response {
    if st.unsubscribe_keys.verify(&token).is_none() {
        return invalid_link();
    }
    html(
        StatusCode::OK,
        "Unsubscribe",
        "<p>Do you want to stop receiving these emails?</p>\n\
         <form method=\"post\">\n\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\n\
         <button type=\"submit\">Unsubscribe</button>\n\
         </form>",
    )
}

/// `POST /v1/unsubscribe/{token}` with `List-Unsubscribe=One-Click`.
pub async fn one_click(
    State(st): State<ApiState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let Some(Unsubscribe {
        channel,
        contact_id,
    }) = st.unsubscribe_keys.verify(&token)
    else {
        return invalid_link();
    };
    if !is_one_click(&body) {
        return html(
            StatusCode::BAD_REQUEST,
            "Unsubscribe",
            "<p>This address takes a one-click unsubscribe request: a form with \
             <code>List-Unsubscribe=One-Click</code>.</p>",
        );
    }
    match st
        .store
        .unsubscribe(&contact_id, Some(&channel), Utc::now())
        .await
    {
        Ok(done) => {
            crate::metrics::unsubscribed(&contact_id, &done);
            let changed = done.changed;
            tracing::info!(%channel, contact_id = %contact_id, changed, "one-click unsubscribe");
            if changed {
                st.wake.notify_one();
            }
        }
        // A contact deleted since the email was sent gets nothing more anyway.
        Err(StoreError::UnknownContact(_)) => {
            tracing::info!(%channel, contact_id = %contact_id, "one-click unsubscribe of an unknown contact");
        }
        Err(e) => {
            tracing::error!(error = %e, %channel, "one-click unsubscribe failed");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Unsubscribe",
                "<p>Sorry, something went wrong. Please try again in a few minutes.</p>",
            );
        }
    }
    html(
        StatusCode::OK,
        "Unsubscribed",
        "<p>You are unsubscribed. You will not receive these emails any more.</p>",
    )
}

/// Whether `body` is the one-click form: `List-Unsubscribe=One-Click`
/// form-encoded (RFC 8058 §3.2), or a multipart/form-data body carrying the
/// same field, which some providers send.
fn is_one_click(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let form = text.split('&').any(|pair| {
        let pair = pair.trim().replace('+', " ");
        pair.eq_ignore_ascii_case("List-Unsubscribe=One-Click")
            || pair.eq_ignore_ascii_case("List-Unsubscribe%3DOne-Click")
    });
    let multipart = text.contains("name=\"List-Unsubscribe\"") && text.contains("One-Click");
    form || multipart
}

fn invalid_link() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "Invalid link",
        "<p>This unsubscribe link is not valid. Please use the link from the email \
         exactly as it was sent.</p>",
    )
}

/// A small page. `body_html` is trusted markup from this file.
fn html(status: StatusCode, title: &str, body_html: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title></head>\n<body>\n{body_html}\n</body></html>\n",
        escape(title)
    );
    let mut r = (status, page).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Never cached or indexed; the page loads nothing and posts only to itself.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_click_bodies() {
        assert!(is_one_click(b"List-Unsubscribe=One-Click"));
        assert!(is_one_click(b"List-Unsubscribe=One-Click\r\n"));
        assert!(is_one_click(b"a=b&List-Unsubscribe=One-Click"));
        assert!(is_one_click(
            b"--x\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--x--"
        ));
        assert!(!is_one_click(b""));
        assert!(!is_one_click(b"List-Unsubscribe=Maybe"));
        assert!(!is_one_click(b"{\"a\":1}"));
    }
}
