-- `nurture prune --older-than D` deletes finished enrollments, sent and
-- dead messages and consumed event-log rows older than D; what it deleted is
-- counted here, per workflow, so `status` and reports still add up.
-- `what`: enrollments_done, enrollments_exited, sent, notices, dead, or
-- log_<kind> (event-log rows, with workflow '').
CREATE TABLE pruned_counts (
    workflow TEXT NOT NULL,
    what     TEXT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (workflow, what)
);
