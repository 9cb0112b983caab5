//! The values a `set:` step (and a webhook step's body) writes.

use super::Planner;
use crate::contact::{Contact, TriggerEvent};
use crate::policy;
use crate::template::render_context;
use crate::workflow::Workflow;

impl Planner<'_> {
    /// The values of a `set:` step: literals as written, templates rendered
    /// (with `contact`, `owner`, `event`) and read as the field's declared
    /// type.
    pub(super) fn set_values(
        &self,
        wf: &Workflow,
        c: &Contact,
        st: &crate::workflow::SetStep,
        trigger: Option<&TriggerEvent>,
    ) -> Result<Vec<(String, serde_json::Value)>, String> {
        use crate::settings::FieldType;
        use crate::workflow::SetValue;
        let mut ctx = None;
        let mut out = Vec::with_capacity(st.values.len());
        for (k, v) in &st.values {
            let value = match v {
                SetValue::Literal(x) => x.clone(),
                SetValue::Template(src) => {
                    let ctx = ctx.get_or_insert_with(|| {
                        let tz = policy::contact_tz(c, self.settings);
                        let owner = c
                            .owner
                            .as_deref()
                            .and_then(|id| self.settings.salesperson(id))
                            .map(|s| s.template_value());
                        let mut ctx = render_context(c, owner.as_ref(), &wf.name, self.now, tz);
                        if let (Some(e), Some(m)) = (trigger, ctx.as_object_mut()) {
                            m.insert("event".into(), e.template_value(tz));
                        }
                        ctx
                    });
                    let text = self
                        .templates
                        .render_inline(src, ctx)
                        .map_err(|e| format!("set {}: {e}", k.value))?;
                    match self.settings.fields.get(&k.value) {
                        Some(FieldType::Number) => {
                            let n: f64 = text.trim().parse().map_err(|_| {
                                format!("set {}: \"{text}\" is not a number", k.value)
                            })?;
                            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                                serde_json::Value::from(n as i64)
                            } else {
                                serde_json::Value::from(n)
                            }
                        }
                        Some(FieldType::Bool) => match text.trim() {
                            "true" => serde_json::Value::Bool(true),
                            "false" => serde_json::Value::Bool(false),
                            _ => {
                                return Err(format!(
                                    "set {}: \"{text}\" is not true or false",
                                    k.value
                                ));
                            }
                        },
                        _ => serde_json::Value::String(text),
                    }
                }
            };
            out.push((k.value.clone(), value));
        }
        Ok(out)
    }
}
