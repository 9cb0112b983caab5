//! Welcome messages: `send_welcome_msg` with the code the callback stored,
//! at most once, even when its outcome was lost.

use serde_json::json;

use super::{SEND_WELCOME, WecomChannel, is_errcode, media};
use crate::channels::{Delivery, Exchange, OutMessage};
use crate::store::Store;

impl WecomChannel {
    /// A message tried before (reclaimed after its worker died, or retried
    /// after a call that got no answer) that had taken its contact's welcome
    /// code and not given it back: its `send_welcome_msg` may have reached
    /// WeCom, and WeCom cannot be asked whether a welcome went out (no id,
    /// no look-up). Sending it again as a mass task could greet the customer
    /// twice, so it is recorded as delivered, at most once, with the doubt
    /// in the log. A code WeCom refused (41050) is no longer this message's
    /// ([`super::tasks::welcome_code_refused`]): that message goes on as a mass
    /// task, whose record [`Self::already_accepted`] finds once WeCom took
    /// it. `None`: this message holds no code; send.
    pub(super) async fn welcome_in_doubt(&self, msg: &OutMessage) -> Option<Exchange> {
        let store = self.store.as_ref()?;
        match store.wecom().welcome_taken_by(&msg.contact_id, &msg.id).await {
            Ok(true) => {
                tracing::warn!(message = %msg.id, contact = %msg.contact_id,
                    "wecom welcome in doubt: the worker stopped during send_welcome_msg, which WeCom cannot be asked about; not sent again as a mass task");
                Some(Delivery::Delivered { provider_id: None }.into())
            }
            Ok(false) => None,
            Err(e) => Some(
                Delivery::Retry {
                    after: None,
                    reason: format!(
                        "wecom: cannot tell whether an earlier welcome was sent (reading its code: {e}); not sending until it can"
                    ),
                }
                .into(),
            ),
        }
    }

    /// `send_welcome_msg` with a code taken for this message.
    pub(super) async fn welcome(
        &self,
        store: &Store,
        msg: &OutMessage,
        code: &str,
        built: &media::Built,
    ) -> Exchange {
        let release = || async {
            if let Err(err) = store
                .wecom()
                .release_welcome_code(&msg.contact_id, code)
                .await
            {
                tracing::warn!(error = %err, "cannot give a welcome code back");
            }
        };
        // No token, no call: the code was not used and a retry may still be
        // inside its 20 s.
        if let Err(e) = self.api.ensure_token().await {
            release().await;
            return e;
        }
        let mut body = json!({ "welcome_code": code, "text": { "content": msg.body } });
        if !built.json.is_empty() {
            body["attachments"] = json!(built.json);
        }
        match self.api.post(SEND_WELCOME, &body).await {
            Ok(a) => a.exchange(Delivery::Delivered { provider_id: None }),
            // The code was not used: the retry may still be inside its 20 s.
            Err(e) if is_errcode(&e, media::INVALID_MEDIA_ID) => {
                release().await;
                self.media_refused(built, e).await
            }
            // 41050: the code is invalid, expired or used (an admin's console
            // welcome, a chat already started): the message still goes out,
            // as a mass task the salesperson confirms.
            Err(e) if is_errcode(&e, 41050) => {
                if let Err(err) = store
                    .wecom()
                    .welcome_code_refused(&msg.contact_id, code)
                    .await
                {
                    // Then a retry of the mass task below would take the
                    // welcome as in doubt: not sending is the safe side.
                    tracing::warn!(error = %err, "cannot record a refused welcome code");
                }
                tracing::info!(message = %msg.id, "wecom welcome code refused (41050); sending a mass task instead");
                self.mass_task(msg, built).await
            }
            Err(e) => {
                // WeCom answered "busy": the code was not used, and a retry
                // may still be inside its 20 s. (After a timeout nobody knows,
                // so the code stays this message's and the retry does not
                // send again: see `welcome_in_doubt`.)
                if matches!(e.delivery, Delivery::Retry { .. } | Delivery::Wait { .. })
                    && e.answer.is_some()
                {
                    release().await;
                }
                e
            }
        }
    }
}
