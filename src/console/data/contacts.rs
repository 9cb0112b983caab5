//! `GET /v1/contacts/...`: search, one contact, its history and its explanation.

use super::*;

/// `GET /v1/contacts/search?q=TEXT&limit=20`: contacts whose id is TEXT, or
/// whose id starts with it, or whose name, phone or e-mail contains it
/// (e-mail case-insensitively).
pub async fn search_contacts(
    State(st): State<ConsoleState>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let Some(text) = param(&q, "q") else {
        return Err(ApiError::bad_request(
            "q: give an id, a name, a phone number or an e-mail",
        ));
    };
    let limit = number(&q, "limit", 20, 200)? as i64;
    let rows = st
        .store
        .console()
        .search_contacts(text, limit)
        .await
        .map_err(internal)?;
    let mut out = Vec::new();
    for (id, name, phone, email, owner) in rows {
        out.push(json!({"id": id, "name": name, "phone": phone, "email": email, "owner": owner}));
    }
    Ok(Json(json!({"contacts": out})))
}

/// `GET /v1/contacts/{id}`: fields, attributes, tags, owner, consent and
/// enrollments (`nurture contacts show ID --format json` prints the same).
pub async fn contact(
    State(st): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let project = st.project();
    match contact_value(&st.store, &project.settings, &id)
        .await
        .map_err(internal)?
    {
        Some(v) => Ok(Json(v)),
        None => Err(no_contact(&id)),
    }
}

/// One contact as `GET /v1/contacts/{id}` and `contacts show` give it;
/// `None` when there is no such contact.
pub async fn contact_value(
    store: &crate::store::Store,
    settings: &crate::settings::Settings,
    id: &str,
) -> anyhow::Result<Option<Value>> {
    let tz = settings.timezone;
    let Some(c) = store.contact(id).await? else {
        return Ok(None);
    };
    let enrollments = store.enrollments_of(id).await?;
    let owner = c.owner.as_deref().map(|o| {
        let sp = settings.salesperson(o);
        json!({"id": o, "name": sp.map(|s| s.name.clone())})
    });
    let channels: Vec<Value> = settings
        .channels
        .keys()
        .map(|ch| json!({"channel": ch, "allowed": !c.unsubscribed && !c.opted_out.contains(ch)}))
        .collect();
    Ok(Some(json!({
        "id": c.id,
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "wecom_external_userid": c.wecom_external_userid,
        "timezone": c.timezone,
        "created_at": time(c.created_at, tz),
        "last_active_at": c.last_active_at.map(|t| time(t, tz)),
        "owner": owner,
        "tags": c.tags,
        "attributes": c.attrs,
        "consent": {
            "unsubscribed": c.unsubscribed,
            "opted_out": c.opted_out,
            "channels": channels,
        },
        "enrollments": enrollments.iter().map(|e| json!({
            "id": e.id,
            "workflow": e.workflow,
            "status": e.status,
            "step": e.step_id,
            "next_run_at": e.next_run_at.map(|t| time(t, tz)),
            "started_at": time(e.started_at, tz),
        })).collect::<Vec<_>>(),
    })))
}

fn no_contact(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no contact with id {id:?}"))
}

/// `GET /v1/contacts/{id}/history`: what `nurture history --contact ID`
/// shows, oldest first, each entry with its time.
pub async fn history(
    State(st): State<ConsoleState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tz = st.project().settings.timezone;
    if !st.store.contact_exists(&id).await.map_err(internal)? {
        return Err(no_contact(&id));
    }
    let entries = st.store.contact_history(&id).await.map_err(internal)?;
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        let mut v = serde_json::to_value(e).map_err(internal)?;
        v["at"] = json!(time(e.at, tz));
        out.push(v);
    }
    Ok(Json(json!({"contact_id": id, "history": out})))
}

/// `GET /v1/contacts/{id}/explain?workflow=&at=`: `nurture dry-run
/// --explain ID` as text, for every workflow or one.
pub async fn explain(
    State(st): State<ConsoleState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let project = st.project();
    let tz = project.settings.timezone;
    let at = match param(&q, "at") {
        Some(s) => parse_at(s, tz).map_err(ApiError::bad_request)?,
        None => Utc::now(),
    };
    let only = param(&q, "workflow");
    if let Some(n) = only
        && !project.workflows.iter().any(|w| w.name == n)
    {
        return Err(unknown_workflow(&project, n));
    }
    let sim = Simulation::new(
        &st.store,
        &project,
        SimOptions {
            at,
            until: at,
            all_contacts: false,
        },
    )
    .await
    .map_err(internal)?;
    let mut planner = sim.planner().await.map_err(internal)?;
    match explain_text(&project, &st.store, &mut planner, &id, only).await {
        Ok(Some(text)) => Ok(Json(
            json!({"contact_id": id, "at": time(at, tz), "text": text}),
        )),
        Ok(None) => Err(no_contact(&id)),
        Err(e) => Err(internal(e)),
    }
}
