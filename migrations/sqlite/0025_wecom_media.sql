-- Issue 9, point 8: rich content. Templates' local attachment files
-- (images, files, mini-program pictures) are uploaded to WeCom once
-- (media/upload) and the media_id reused. WeCom keeps a media_id 3 days;
-- nurture treats one as expired after 2.5 days and uploads again. Keyed by
-- the file's content hash, so an edited file is uploaded anew.
CREATE TABLE wecom_media (
    channel     TEXT NOT NULL,
    path        TEXT NOT NULL,                 -- as written in the template
    sha256      TEXT NOT NULL,                 -- hex of the uploaded bytes
    media_type  TEXT NOT NULL,                 -- image | file
    media_id    TEXT NOT NULL,
    uploaded_at INTEGER NOT NULL,              -- ms
    PRIMARY KEY (channel, path, sha256, media_type)
);
