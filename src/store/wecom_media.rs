//! The `media_id`s of uploaded attachment files (migration 0025; issue 9,
//! point 8): see `channels::wecom::media`.

use chrono::{DateTime, Duration, Utc};

use super::{Store, StoreError, to_ms};

/// WeCom keeps an uploaded file 3 days; nurture uploads again after this,
/// so a message queued near the end of the window never carries an id that
/// expires on its way.
pub const MEDIA_FRESH_FOR: Duration = Duration::hours(60);

/// One uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaKey<'a> {
    pub channel: &'a str,
    pub path: &'a str,
    pub sha256: &'a str,
    pub media_type: &'a str,
}

impl Store {
    /// The `media_id` of this exact file uploaded less than
    /// [`MEDIA_FRESH_FOR`] before `now`, if any.
    pub async fn wecom_media_id(
        &self,
        k: &MediaKey<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT media_id FROM wecom_media WHERE channel = $1 AND path = $2 AND sha256 = $3 \
             AND media_type = $4 AND uploaded_at > $5",
        )
        .bind(k.channel)
        .bind(k.path)
        .bind(k.sha256)
        .bind(k.media_type)
        .bind(to_ms(now - MEDIA_FRESH_FOR))
        .fetch_optional(self.db())
        .await?)
    }

    /// Records an upload (replacing an older one of the same file).
    pub async fn record_wecom_media(
        &self,
        k: &MediaKey<'_>,
        media_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO wecom_media (channel, path, sha256, media_type, media_id, uploaded_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (channel, path, sha256, media_type) \
             DO UPDATE SET media_id = excluded.media_id, uploaded_at = excluded.uploaded_at",
        )
        .bind(k.channel)
        .bind(k.path)
        .bind(k.sha256)
        .bind(k.media_type)
        .bind(media_id)
        .bind(to_ms(now))
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Forgets ids WeCom refused (40007): the next send uploads again.
    pub async fn forget_wecom_media(
        &self,
        channel: &str,
        media_ids: &[String],
    ) -> Result<(), StoreError> {
        for id in media_ids {
            sqlx::query("DELETE FROM wecom_media WHERE channel = $1 AND media_id = $2")
                .bind(channel)
                .bind(id)
                .execute(self.db())
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test]
    async fn ids_are_fresh_for_two_and_a_half_days_and_per_content() {
        let s = Store::open("sqlite::memory:").await.unwrap();
        let t0 = Utc.timestamp_opt(1_780_000_000, 0).unwrap();
        let k = MediaKey {
            channel: "wecom",
            path: "media/a.png",
            sha256: "aa",
            media_type: "image",
        };
        s.record_wecom_media(&k, "m1", t0).await.unwrap();
        assert_eq!(
            s.wecom_media_id(&k, t0 + Duration::hours(59))
                .await
                .unwrap()
                .as_deref(),
            Some("m1")
        );
        assert_eq!(
            s.wecom_media_id(&k, t0 + Duration::hours(61))
                .await
                .unwrap(),
            None
        );
        let edited = MediaKey {
            sha256: "bb",
            ..k.clone()
        };
        assert_eq!(s.wecom_media_id(&edited, t0).await.unwrap(), None);
        s.forget_wecom_media("wecom", &["m1".into()]).await.unwrap();
        assert_eq!(s.wecom_media_id(&k, t0).await.unwrap(), None);
    }
}
