//! Organisation rules in Cedar: who may fetch which model, on top of the export-control checks.
//! Policies are validated against `org.cedarschema` at load; a request is evaluated against the
//! few entities it names (requester, organisation, model), built per decision.

use super::data::{Ctx, ModelEntry, Organisation, PolicyError, Requester};
use cedar_policy::entities_errors::EntitiesError;
use cedar_policy::{
    Authorizer, Context, ContextCreationError, Decision, Entities, Entity,
    EntityAttrEvaluationError, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RequestValidationError, RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// The Cedar namespace of the schema.
pub const NAMESPACE: &str = "WeightVault";

/// Loaded, validated organisation rules.
pub struct OrgRules {
    schema: Schema,
    policies: PolicySet,
    /// Policy id -> `@id("...")` annotation (or the generated id).
    names: HashMap<String, String>,
    action: EntityUid,
    t_requester: EntityTypeName,
    t_org: EntityTypeName,
    t_model: EntityTypeName,
}

/// What the organisation rules said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgVerdict {
    /// Allowed by a permit, and no forbid applied.
    pub allowed: bool,
    /// The policies that decided (permits when allowed, forbids when denied).
    pub policies: Vec<String>,
    /// Evaluation errors (a policy that errors is skipped by Cedar; reported here).
    pub errors: Vec<String>,
}

/// Why a request could not be put to the organisation rules: Cedar refused an entity, the
/// entities, the context or the request built from the decision's inputs. [`OrgRules::decide`]
/// reports it as the verdict's one evaluation error (and denies). Cedar's errors are large,
/// hence boxed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OrgRequestError {
    /// An entity's attributes.
    #[error(transparent)]
    Entity(Box<EntityAttrEvaluationError>),
    /// The entities, checked against the schema.
    #[error("{}", one_line(.0))]
    Entities(#[source] Box<EntitiesError>),
    /// The request context.
    #[error("{}", one_line(.0))]
    Context(#[source] Box<ContextCreationError>),
    /// The request, checked against the schema.
    #[error("{}", one_line(.0))]
    Request(#[source] Box<RequestValidationError>),
}

macro_rules! org_request_error_from {
    ($($variant:ident($cedar:ty)),*) => {
        $(impl From<$cedar> for OrgRequestError {
            fn from(e: $cedar) -> Self {
                Self::$variant(Box::new(e))
            }
        })*
    };
}

org_request_error_from!(
    Entity(EntityAttrEvaluationError),
    Entities(EntitiesError),
    Context(ContextCreationError),
    Request(RequestValidationError)
);

fn first_offset(d: &dyn Diagnostic) -> usize {
    d.labels()
        .and_then(|mut l| l.next())
        .map(|l| l.offset())
        .or_else(|| d.related().and_then(|mut r| r.next()).map(first_offset))
        .unwrap_or(0)
}

/// Context passed with every request.
pub struct OrgContext<'a> {
    /// Attested host id.
    pub host_id: &'a str,
    /// Attested host country.
    pub host_country: &'a str,
    /// Attested host region.
    pub host_region: &'a str,
    /// Destination tier (1, 2, 3).
    pub tier: i64,
    /// Country of the request's network origin ("" when unknown).
    pub origin_country: &'a str,
}

impl OrgRules {
    pub(crate) fn parse(schema_ctx: &Ctx<'_>, policy_ctx: &Ctx<'_>) -> Result<Self, PolicyError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(schema_ctx.text)
            .map_err(|e| schema_ctx.err(first_offset(&e), format!("schema: {}", one_line(&e))))?;
        let policies = PolicySet::from_str(policy_ctx.text)
            .map_err(|e| policy_ctx.err(first_offset(&e), format!("Cedar: {}", one_line(&e))))?;
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if let Some(e) = result.validation_errors().next() {
            return Err(policy_ctx.err(
                first_offset(e),
                format!("Cedar policy does not match the schema: {}", one_line(e)),
            ));
        }
        let mut names = HashMap::new();
        for p in policies.policies() {
            let name = p
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| p.id().to_string());
            names.insert(p.id().to_string(), name);
        }
        let ty = |t: &str| {
            EntityTypeName::from_str(&format!("{NAMESPACE}::{t}")).expect("valid type name")
        };
        Ok(Self {
            action: EntityUid::from_type_name_and_id(ty("Action"), EntityId::new("fetch")),
            t_requester: ty("Requester"),
            t_org: ty("Organisation"),
            t_model: ty("Model"),
            schema,
            policies,
            names,
        })
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    /// Whether there are no policies (then nothing is permitted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evaluates `fetch` of `model` by `who`.
    pub fn decide(
        &self,
        who: &Requester,
        org: &Organisation,
        model: &ModelEntry,
        ctx: &OrgContext<'_>,
    ) -> OrgVerdict {
        match self.try_decide(who, org, model, ctx) {
            Ok(v) => v,
            Err(e) => OrgVerdict {
                allowed: false,
                policies: vec![],
                errors: vec![e.to_string()],
            },
        }
    }

    fn try_decide(
        &self,
        who: &Requester,
        org: &Organisation,
        model: &ModelEntry,
        ctx: &OrgContext<'_>,
    ) -> Result<OrgVerdict, OrgRequestError> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let org_uid = EntityUid::from_type_name_and_id(self.t_org.clone(), EntityId::new(&org.id));
        let who_uid =
            EntityUid::from_type_name_and_id(self.t_requester.clone(), EntityId::new(&who.id));
        let model_uid =
            EntityUid::from_type_name_and_id(self.t_model.clone(), EntityId::new(&model.name));
        let entities = vec![
            Entity::new(
                org_uid.clone(),
                HashMap::from([
                    ("name".into(), s(&org.name)),
                    ("country".into(), s(&org.country)),
                ]),
                HashSet::new(),
            )?,
            Entity::new(
                who_uid.clone(),
                HashMap::from([
                    (
                        "kind".into(),
                        s(match who.kind {
                            super::data::RequesterKind::Person => "person",
                            super::data::RequesterKind::Workload => "workload",
                        }),
                    ),
                    ("organisation".into(), s(&who.organisation)),
                    (
                        "nationalities".into(),
                        RestrictedExpression::new_set(who.nationalities.iter().map(|n| s(n))),
                    ),
                ]),
                HashSet::from([org_uid]),
            )?,
            Entity::new(
                model_uid.clone(),
                HashMap::from([
                    ("eccn".into(), s(&model.eccn)),
                    ("owner".into(), s(&model.owner)),
                    (
                        "open_weights".into(),
                        RestrictedExpression::new_bool(model.open_weights),
                    ),
                    (
                        "controlled".into(),
                        RestrictedExpression::new_bool(model.controlled()),
                    ),
                ]),
                HashSet::new(),
            )?,
        ];
        let entities = Entities::from_entities(entities, Some(&self.schema))?;
        let context = Context::from_pairs([
            ("host_id".to_string(), s(ctx.host_id)),
            ("host_country".to_string(), s(ctx.host_country)),
            ("host_region".to_string(), s(ctx.host_region)),
            ("tier".to_string(), RestrictedExpression::new_long(ctx.tier)),
            ("origin_country".to_string(), s(ctx.origin_country)),
        ])?;
        let request = Request::new(
            who_uid,
            self.action.clone(),
            model_uid,
            context,
            Some(&self.schema),
        )?;
        let resp = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        let mut policies: Vec<String> = resp
            .diagnostics()
            .reason()
            .map(|id| {
                self.names
                    .get(&id.to_string())
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        policies.sort();
        let errors = resp.diagnostics().errors().map(|e| one_line(e)).collect();
        Ok(OrgVerdict {
            allowed: resp.decision() == Decision::Allow,
            policies,
            errors,
        })
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
