//! A notice to a salesperson: `message/send` from the app, paced to
//! WeCom's per-member limits.

use serde_json::{Value, json};

use super::{MESSAGE_SEND, NOTICE_TEXT_MAX, WecomChannel, permanent};
use crate::channels::{Delivery, Exchange, OutMessage};

impl WecomChannel {
    /// `message/send` to a salesperson, paced to WeCom's per-member limits
    /// (see [`pacing`]).
    pub(super) async fn notice(&self, msg: &OutMessage) -> Exchange {
        if msg.to.trim().is_empty() {
            return permanent("wecom: the salesperson has no wecom_userid");
        }
        if msg.body.len() > NOTICE_TEXT_MAX {
            return permanent(&format!(
                "wecom: the notice is {} bytes; app messages take at most {NOTICE_TEXT_MAX}",
                msg.body.len()
            ));
        }
        if let Err(wait) = self
            .pacing
            .reserve(self.store.as_ref(), &self.config.name, &msg.to)
            .await
        {
            return wait.into();
        }
        let body = json!({
            "touser": msg.to,
            "msgtype": "text",
            "agentid": self.config.agent_id,
            "text": { "content": msg.body },
            "safe": 0,
            "enable_duplicate_check": 1,
            "duplicate_check_interval": 1800,
        });
        let answer = match self.api.post(MESSAGE_SEND, &body).await {
            Ok(a) => a,
            Err(e) => return e,
        };
        // WeCom userids are case-insensitive and `invaliduser` comes back
        // lower-cased; `unlicenseduser` members did not get it either.
        let listed = |key: &str| {
            answer
                .json
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .split('|')
                .any(|u| u.trim().eq_ignore_ascii_case(msg.to.trim()))
        };
        if listed("invaliduser") {
            return answer.exchange(Delivery::Permanent {
                reason: format!(
                    "wecom: {} is not a member the app {} can reach (invaliduser)",
                    msg.to, self.config.agent_id
                ),
            });
        }
        if listed("unlicenseduser") {
            return answer.exchange(Delivery::Permanent {
                reason: format!(
                    "wecom: {} has no WeCom account licence: the notice was not delivered (unlicenseduser)",
                    msg.to
                ),
            });
        }
        let provider_id = answer
            .json
            .get("msgid")
            .and_then(Value::as_str)
            .map(str::to_string);
        answer.exchange(Delivery::Delivered { provider_id })
    }
}
