-- The planner reads each customer's transfers (WeCom's limits, issue 9) in
-- batches, and the channel reads one customer's before a transfer: by
-- external userid, over the last 90 days.
CREATE INDEX wecom_tasks_customer ON wecom_tasks (external_userid, created_at);
