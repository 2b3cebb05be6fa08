//! The OpenAPI document's parts that are not routes: its title, the error body, the security
//! schemes, and the error answers every route can give because of what it takes (a key, a body,
//! a query, a path id, an `Idempotency-Key`). The routes themselves come from the router
//! (`super::api_routes`), so the document lists exactly what is served.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{OpenApi, Ref, ResponseBuilder, content::ContentBuilder};
use utoipa_axum::router::UtoipaMethodRouter;

use super::AppState;
use super::error::ErrorBody;
use crate::domain::ids::{Id, IdKind};

/// What the document holds besides the routes: its title, the error body, the security schemes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Wenhui", description = "Cultural consumption vouchers and benefit cards"),
    components(schemas(ErrorBody)),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

/// A typed id is a bare UUID on the wire: its schema is `Uuid`'s (`string`, `format: uuid`),
/// named after its kind (`SeasonId`, `MerchantId`, ...) so the document says which id a field
/// holds. Here rather than in `domain::ids`, which knows nothing of the API document.
impl<K: IdKind> utoipa::PartialSchema for Id<K> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .into()
    }
}

impl<K: IdKind> utoipa::ToSchema for Id<K> {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(K::NAME)
    }
}

/// The security scheme of a staff key (`Authorization: Bearer <key>`).
pub const STAFF_KEY: &str = "staff_key";
/// The security scheme of a citizen's session token (`Authorization: Bearer <token>`).
pub const CITIZEN_TOKEN: &str = "citizen_token";
/// The four schemes of a terminal-signed request, required together (docs/terminal-signing.md):
/// each names one `Wenhui-*` header. Use as
/// `security(("terminal_id" = [], "terminal_timestamp" = [], "terminal_nonce" = [], "terminal_signature" = []))`.
pub const TERMINAL_SIGNATURE: [(&str, &str, &str); 4] = [
    ("terminal_id", "Wenhui-Terminal", "the terminal's id"),
    ("terminal_timestamp", "Wenhui-Timestamp", "Unix seconds: digits, no sign, no leading zero"),
    ("terminal_nonce", "Wenhui-Nonce", "unique per request within the signing window"),
    ("terminal_signature", "Wenhui-Signature", "the terminal key's signature over the canonical request"),
];

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [(STAFF_KEY, "a staff key"), (CITIZEN_TOKEN, "a citizen's session token")] {
            let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(what)).build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
        for (name, header, what) in TERMINAL_SIGNATURE {
            let scheme = SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(header, what)));
            components.add_security_scheme(name, scheme);
        }
    }
}

/// Sets the operation id of every operation `routes` declares (one handler's routes).
pub(super) fn operation_id(routes: UtoipaMethodRouter<AppState>, id: &str) -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, method_router) = routes;
    for operation in paths.paths.values_mut().flat_map(operations) {
        operation.operation_id = Some(id.to_owned());
    }
    (schemas, paths, method_router)
}

/// Declares `routes` as terminal-signed: the four terminal schemes together, in place of the
/// four `Wenhui-*` header parameters.
pub(super) fn terminal_signed(routes: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, method_router) = routes;
    let requirement = TERMINAL_SIGNATURE
        .iter()
        .fold(SecurityRequirement::default(), |all, (name, ..)| all.add::<&str, [&str; 0], &str>(name, []));
    for operation in paths.paths.values_mut().flat_map(operations) {
        if let Some(parameters) = operation.parameters.as_mut() {
            let signature_header =
                |name: &str| TERMINAL_SIGNATURE.iter().any(|(_, header, _)| *header == name);
            parameters.retain(|p| !(p.parameter_in == ParameterIn::Header && signature_header(&p.name)));
        }
        operation.security = Some(vec![requirement.clone()]);
    }
    (schemas, paths, method_router)
}

/// The operations of a path item, whichever methods it has.
pub fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Adds to every operation the error answers its extractors can give, unless it declares that
/// status itself (with a more specific description): see `extract.rs`, `idempotency.rs` and
/// `error.rs`.
pub struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for operation in openapi.paths.paths.values_mut().flat_map(operations) {
            for (status, description) in implied_errors(operation) {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error_answer(description));
            }
        }
    }
}

/// The error statuses an operation can answer because of what it takes.
fn implied_errors(operation: &Operation) -> Vec<(u16, &'static str)> {
    let schemes = scheme_names(operation);
    let takes = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .filter(move |p| p.parameter_in == place)
            .map(|p| p.name.as_str())
    };
    let mut errors = Vec::new();
    if !schemes.is_empty() {
        errors.push((401, "unauthenticated, invalid_key, or a refused signature or session"));
    }
    if schemes.iter().any(|name| name == STAFF_KEY) {
        errors.push((403, "forbidden: the key's role or region does not allow this"));
    }
    if takes(ParameterIn::Path).next().is_some() {
        errors.push((404, "not_found: no such id, or the id is malformed"));
    }
    if operation.request_body.is_some() {
        errors.push((400, "malformed_json"));
        errors.push((413, "body_too_large"));
        errors.push((415, "unsupported_media_type: the body is not of the Content-Type the operation takes"));
        errors.push((422, "invalid_body, or a field out of its range"));
    }
    if takes(ParameterIn::Query).next().is_some() {
        errors.push((400, "invalid_query"));
        errors.push((422, "a query value out of its range, such as invalid_limit"));
    }
    if takes(ParameterIn::Header).any(|name| name.eq_ignore_ascii_case("idempotency-key")) {
        errors.push((400, "missing_idempotency_key, invalid_idempotency_key, duplicate_idempotency_key"));
        errors.push((409, "the write conflicts with the data as it now stands"));
        errors.push((422, "idempotency_key_reused with a different request"));
    }
    errors.push((
        503,
        "database_busy, database_unavailable or timeout: retry shortly (with the same Idempotency-Key)",
    ));
    errors
}

/// The names of the security schemes an operation requires (any of its requirements).
fn scheme_names(operation: &Operation) -> Vec<String> {
    let requirements = serde_json::to_value(&operation.security).unwrap_or_default();
    let requirements = requirements.as_array().map(Vec::as_slice).unwrap_or_default();
    requirements.iter().filter_map(|r| r.as_object()).flat_map(|r| r.keys().cloned()).collect()
}

/// An error answer: `description` and the error body.
fn error_answer(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    ResponseBuilder::new().description(description).content("application/json", content).build().into()
}
