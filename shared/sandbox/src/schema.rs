//! Request bodies and `$select` checked against Microsoft Graph's v1.0 schema.
//!
//! `build.rs` extracts the directory entity types the sandbox serves (and the complex and enum
//! types they use) from Microsoft's CSDL in `schema/` and embeds them as JSON. The checks here
//! reject what Graph rejects, with Graph's wire text:
//!
//! * **OData layer** (Graph parses the payload against the model with Microsoft.OData.Core before
//!   the workload sees it): wrong JSON types, nulls where the model forbids them, unknown
//!   properties of non-open types (`passwordProfile`, `domain`, ...). Texts are the ODataLib
//!   resource strings (OData/odata.net, `src/Microsoft.OData.Core/Microsoft.OData.Core.txt`);
//!   code `BadRequest` as Graph sends OData-layer failures (see [`CODE_ODATA`]).
//! * **Directory layer**: `user`, `group`, `organization` and `directoryObject` are *open* types,
//!   so the OData layer lets unknown names through and the directory rejects them
//!   (`Request_BadRequest`, `Request_UnsupportedQuery`).
//!
//! Checks run in payload order (`serde_json` keeps insertion order in this workspace), like the
//! streaming OData reader: the first OData-layer failure wins; an unknown name on an open type
//! is reported only when the OData layer found nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Code Graph sends for failures of its OData layer (payload deserialisation, query parsing).
/// Seen on the wire for `$select` of an undeclared property ("Parsing OData Select and Expand
/// failed: Could not find a property named 'wellKnownName' on type 'microsoft.graph.mailFolder'.",
/// 400 `BadRequest`, several independent reports) and for payload node mismatches. Not confirmed
/// for body type errors on directory objects specifically; `BadRequest` is the most commonly
/// reported code for these ODataLib texts.
pub const CODE_ODATA: &str = "BadRequest";
/// Code the directory (Entra ID) layer sends for a rejected write, e.g.
/// `{"code":"Request_BadRequest","message":"Invalid property 'responseHeaders'."}` on
/// `PATCH /v1.0/groups/{id}` (pnp/PnP-Sites-Core issue #1807).
pub const CODE_DIRECTORY: &str = "Request_BadRequest";
/// Code the directory layer sends for a query naming an unknown property, e.g.
/// `{"code":"Request_UnsupportedQuery","message":"Property 'a' does not exist as a declared
/// property or extension property."}` (recorded Graph responses in test fixtures of
/// instructure/canvas-lms `microsoft_sync` and of an iPaaS Graph connector; a 2024 write-up on
/// `$filter` over administrative-unit members shows the same pair).
pub const CODE_UNSUPPORTED_QUERY: &str = "Request_UnsupportedQuery";

static SCHEMA_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/graph_schema.json"));

const NAMESPACE: &str = "microsoft.graph.";

/// Why Graph would refuse a request body or a `$select`: the HTTP status, the `error.code` and
/// the `error.message` Graph sends, and the property (a path such as `passwordProfile.foo` or
/// `assignedLicenses[0].skuId`) at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    status: u16,
    code: &'static str,
    message: String,
    property: String,
}

impl SchemaViolation {
    fn new(code: &'static str, property: &str, message: String) -> Self {
        Self {
            status: 400,
            code,
            message,
            property: property.to_owned(),
        }
    }

    /// HTTP status: 400, or 500 when the sandbox itself has no schema for the entity asked
    /// about (a sandbox bug, never a client error).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Graph's `error.code`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Graph's `error.message`.
    pub fn message(&self) -> String {
        self.message.clone()
    }

    /// The offending property, as a path from the top of the body.
    pub fn property(&self) -> &str {
        &self.property
    }
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for SchemaViolation {}

/// Checks a POST/PATCH body for `entity` (short name: `"user"`, `"group"`, ...): every key must
/// be a structural property (inherited ones included), `<nav>@odata.bind` for a navigation
/// property, `<property>@odata.type`, or `@odata.type`; every value must fit its declared type.
pub fn validate_body(entity: &str, body: &Map<String, Value>) -> Result<(), SchemaViolation> {
    let schema = schema();
    let def = schema
        .entity(entity)
        .ok_or_else(|| unknown_entity(entity))?;
    check_object(schema, def, body, "", true)
}

/// Checks the names of a `$select`: each must be a structural or navigation property of
/// `entity` (inherited ones included, so `id` passes) or `*`. Names are matched without regard
/// to ASCII case, as Graph's query parser does.
pub fn validate_select(entity: &str, props: &[&str]) -> Result<(), SchemaViolation> {
    let schema = schema();
    let def = schema
        .entity(entity)
        .ok_or_else(|| unknown_entity(entity))?;
    for raw in props {
        let name = raw.trim();
        if name == "*"
            || def.props.iter().any(|p| p.name.eq_ignore_ascii_case(name))
            || def.navs.iter().any(|n| n.name.eq_ignore_ascii_case(name))
        {
            continue;
        }
        return Err(if def.open {
            // The OData layer accepts any name on an open type; the directory refuses it.
            SchemaViolation::new(
                CODE_UNSUPPORTED_QUERY,
                name,
                format!(
                    "Property '{name}' does not exist as a declared property or extension property."
                ),
            )
        } else {
            // MetadataBinder_PropertyNotDeclared, prefixed as Graph's $select parser reports it
            // (verbatim in two independent captures of Graph 400 responses).
            SchemaViolation::new(
                CODE_ODATA,
                name,
                format!(
                    "Parsing OData Select and Expand failed: Could not find a property named \
                     '{name}' on type '{}'.",
                    def.name
                ),
            )
        });
    }
    Ok(())
}

/// Whether `name` is a structural property of `entity`, inherited ones included.
pub fn has_property(entity: &str, name: &str) -> bool {
    schema()
        .entity(entity)
        .is_some_and(|def| def.prop(name).is_some())
}

/// What a name given to `$expand` is on `entity` (matched without regard to ASCII case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpandName {
    /// A navigation property, under its declared name (`manager`, `members`).
    Navigation(&'static str),
    /// A structural property: not expandable.
    Structural(&'static str),
    /// Neither.
    Unknown,
}

/// Resolves `name` among `entity`'s navigation and structural properties, and gives the type's
/// full name (`microsoft.graph.user`) for Graph's error texts. `None` for an unknown entity.
pub(crate) fn expand_name(entity: &str, name: &str) -> Option<(&'static str, ExpandName)> {
    let def = schema().entity(entity)?;
    let found = if let Some(nav) = def.navs.iter().find(|n| n.name.eq_ignore_ascii_case(name)) {
        ExpandName::Navigation(nav.name)
    } else if let Some(prop) = def.props.iter().find(|p| p.name.eq_ignore_ascii_case(name)) {
        ExpandName::Structural(prop.name)
    } else {
        ExpandName::Unknown
    };
    Some((def.name, found))
}

/// The structural properties of `entity`, inherited ones first (`id` from `entity`, ...), in
/// CSDL order. Empty for an unknown entity.
pub fn property_names(entity: &str) -> Vec<&'static str> {
    schema()
        .entity(entity)
        .map(|def| def.props.iter().map(|p| p.name).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The embedded schema

#[derive(Deserialize)]
struct RawSchema<'a> {
    #[serde(borrow)]
    entities: HashMap<&'a str, RawStructured<'a>>,
    #[serde(borrow)]
    complex: HashMap<&'a str, RawStructured<'a>>,
    #[serde(borrow)]
    enums: HashMap<&'a str, RawEnum<'a>>,
}

#[derive(Deserialize)]
struct RawStructured<'a> {
    base: Option<&'a str>,
    open: bool,
    /// `[name, type, isCollection, nullable]`
    #[serde(borrow)]
    props: Vec<(&'a str, &'a str, bool, bool)>,
    /// `[name, targetType, isCollection]`; entity types only.
    #[serde(borrow, default)]
    navs: Vec<(&'a str, &'a str, bool)>,
}

#[derive(Deserialize)]
struct RawEnum<'a> {
    flags: bool,
    #[serde(borrow)]
    members: Vec<&'a str>,
}

#[derive(Clone, Copy)]
struct PropDef {
    name: &'static str,
    ty: &'static str,
    collection: bool,
    nullable: bool,
}

#[derive(Clone, Copy)]
struct NavDef {
    name: &'static str,
    collection: bool,
}

/// A structured type with its inherited members flattened in, base type's first.
struct TypeDef {
    name: &'static str,
    open: bool,
    props: Vec<PropDef>,
    navs: Vec<NavDef>,
}

impl TypeDef {
    fn prop(&self, name: &str) -> Option<&PropDef> {
        self.props.iter().find(|p| p.name == name)
    }

    fn nav(&self, name: &str) -> Option<&NavDef> {
        self.navs.iter().find(|n| n.name == name)
    }
}

struct EnumDef {
    flags: bool,
    members: Vec<&'static str>,
}

#[derive(Default)]
struct Schema {
    entities: HashMap<&'static str, TypeDef>,
    complex: HashMap<&'static str, TypeDef>,
    enums: HashMap<&'static str, EnumDef>,
}

impl Schema {
    fn entity(&self, short: &str) -> Option<&TypeDef> {
        self.entities.get(format!("{NAMESPACE}{short}").as_str())
    }
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    // build.rs checks the JSON it writes; should it still not load, the schema is empty and
    // every check fails closed with a 500 naming the entity (see `unknown_entity`).
    SCHEMA.get_or_init(|| load(SCHEMA_JSON).unwrap_or_default())
}

fn load(json: &'static str) -> Result<Schema, serde_json::Error> {
    let raw: RawSchema<'static> = serde_json::from_str(json)?;
    let entities = raw
        .entities
        .keys()
        .map(|name| (*name, flatten(&raw.entities, name)))
        .collect();
    let complex = raw
        .complex
        .keys()
        .map(|name| (*name, flatten(&raw.complex, name)))
        .collect();
    let enums = raw
        .enums
        .into_iter()
        .map(|(name, e)| {
            let def = EnumDef {
                flags: e.flags,
                members: e.members,
            };
            (name, def)
        })
        .collect();
    Ok(Schema {
        entities,
        complex,
        enums,
    })
}

fn flatten(all: &HashMap<&'static str, RawStructured<'static>>, name: &'static str) -> TypeDef {
    // Base chain, most derived first; bounded so a malformed cycle cannot loop.
    let mut chain = Vec::new();
    let mut next = Some(name);
    while let Some(n) = next {
        let Some(def) = all.get(n) else { break };
        if chain.len() > 32 {
            break;
        }
        chain.push(def);
        next = def.base;
    }
    let open = chain.first().is_some_and(|d| d.open);
    let mut props = Vec::new();
    let mut navs = Vec::new();
    for def in chain.iter().rev() {
        props.extend(
            def.props
                .iter()
                .map(|&(name, ty, collection, nullable)| PropDef {
                    name,
                    ty,
                    collection,
                    nullable,
                }),
        );
        navs.extend(
            def.navs
                .iter()
                .map(|&(name, _, collection)| NavDef { name, collection }),
        );
    }
    TypeDef {
        name,
        open,
        props,
        navs,
    }
}

fn unknown_entity(entity: &str) -> SchemaViolation {
    SchemaViolation {
        status: 500,
        code: "UnknownError",
        message: format!("The sandbox has no schema for entity type '{NAMESPACE}{entity}'."),
        property: String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Body checks

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn odata(path: &str, message: String) -> SchemaViolation {
    SchemaViolation::new(CODE_ODATA, path, message)
}

/// The JSON reader node ODataLib names in its messages.
fn node(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "StartArray",
        Value::Object(_) => "StartObject",
        _ => "PrimitiveValue",
    }
}

/// The literal as .NET prints the value ODataLib read (`True`, `5`, `1.5`, the string itself).
fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        other => other.to_string(),
    }
}

fn check_object(
    schema: &Schema,
    def: &TypeDef,
    obj: &Map<String, Value>,
    prefix: &str,
    is_entity: bool,
) -> Result<(), SchemaViolation> {
    // An unknown name on an open entity passes the OData layer and is refused afterwards by the
    // directory, so OData-layer failures later in the payload take precedence.
    let mut refused_by_directory: Option<SchemaViolation> = None;
    for (key, value) in obj {
        let path = join(prefix, key);
        if key == "@odata.type" {
            continue;
        }
        if let Some((name, annotation)) = key.split_once('@') {
            if annotation == "odata.bind" && is_entity && !name.is_empty() {
                check_bind(def, name, value, &path)?;
                continue;
            }
            if annotation == "odata.type" && def.prop(name).is_some() {
                continue;
            }
        } else if let Some(prop) = def.prop(key) {
            check_property(schema, prop, value, &path)?;
            continue;
        }
        // Not a declared property.
        if !def.open {
            // ValidationUtils_PropertyDoesNotExistOnType
            return Err(odata(
                &path,
                format!(
                    "The property '{key}' does not exist on type '{}'. Make sure to only use \
                     property names that are defined by the type or mark the type as open type.",
                    def.name
                ),
            ));
        }
        if is_entity && refused_by_directory.is_none() {
            let message = if key.starts_with("extension_") {
                // Unregistered directory extension: Request_BadRequest with this text
                // (Azure-Samples/ms-identity-dotnetcore-b2c-account-management issue #17).
                format!("The following extension properties are not available: {key}.")
            } else {
                // pnp/PnP-Sites-Core issue #1807: PATCH /v1.0/groups/{id} with an undeclared
                // property gives 400 Request_BadRequest "Invalid property 'responseHeaders'.".
                format!("Invalid property '{key}'.")
            };
            refused_by_directory = Some(SchemaViolation::new(CODE_DIRECTORY, &path, message));
        }
        // Open complex types (customSecurityAttributeValue) take any name.
    }
    refused_by_directory.map_or(Ok(()), Err)
}

fn check_bind(def: &TypeDef, name: &str, value: &Value, path: &str) -> Result<(), SchemaViolation> {
    let Some(nav) = def.nav(name) else {
        let message = match def.prop(name) {
            // ODataJsonLightResourceDeserializer_PropertyWithoutValueWithWrongType
            Some(prop) => format!(
                "A property '{name}' which only has property annotations in the payload but no \
                 property value is declared to be of type '{}'. In OData, only navigation \
                 properties and named streams can be represented as properties without values.",
                full_type(prop)
            ),
            // ODataJsonLightResourceDeserializer_PropertyWithoutValueWithUnknownType; the same
            // text comes back verbatim from Dataverse for a misspelt `@odata.bind`.
            None => format!(
                "An undeclared property '{name}' which only has property annotations in the \
                 payload but no property value was found in the payload. In OData, only \
                 declared navigation properties and declared named streams can be represented \
                 as properties without values."
            ),
        };
        return Err(odata(path, message));
    };
    let ok = if nav.collection {
        match value {
            Value::Array(items) if items.is_empty() => {
                // ODataJsonLightResourceDeserializer_EmptyBindArray
                return Err(odata(
                    path,
                    "The value of 'odata.bind' property annotation is an empty array. The \
                     'odata.bind' property annotation must have a non-empty array as its value."
                        .to_owned(),
                ));
            }
            Value::Array(items) => items.iter().all(Value::is_string),
            Value::String(_) => {
                // ODataJsonLightResourceDeserializer_StringValueForCollectionBindPropertyAnnotation
                return Err(odata(
                    path,
                    format!(
                        "The resource set reference navigation property '{name}' has a property \
                         annotation 'odata.bind' with a string value. Resource set reference \
                         navigation properties can only have a property annotation \
                         'odata.bind' with an array value."
                    ),
                ));
            }
            _ => false,
        }
    } else {
        match value {
            Value::String(_) => true,
            Value::Array(_) => {
                // ODataJsonLightResourceDeserializer_ArrayValueForSingletonBindPropertyAnnotation
                return Err(odata(
                    path,
                    format!(
                        "The resource reference navigation property '{name}' has a property \
                         annotation 'odata.bind' with an array value. Resource reference \
                         navigation properties can only have a property annotation \
                         'odata.bind' with a string value."
                    ),
                ));
            }
            _ => false,
        }
    };
    if ok {
        Ok(())
    } else {
        // JsonReaderExtensions_CannotReadPropertyValueAsString: the reader wants a URL string.
        let shown = match value {
            Value::Array(items) => items
                .iter()
                .find(|v| !v.is_string())
                .map_or_else(String::new, literal),
            other => literal(other),
        };
        Err(odata(
            path,
            format!(
                "Cannot read the value '{shown}' for the property '{name}@odata.bind' as a \
                 quoted JSON string value."
            ),
        ))
    }
}

fn full_type(prop: &PropDef) -> String {
    if prop.collection {
        format!("Collection({})", prop.ty)
    } else {
        prop.ty.to_owned()
    }
}

fn check_property(
    schema: &Schema,
    prop: &PropDef,
    value: &Value,
    path: &str,
) -> Result<(), SchemaViolation> {
    let name = prop.name;
    if value.is_null() {
        // A collection property itself can never be null; `Nullable` only speaks of its items.
        if prop.collection && prop.nullable {
            // ReaderValidationUtils_NullNamedValueForNullableType
            let ty = full_type(prop);
            return Err(odata(
                path,
                format!(
                    "A null value was found for the property named '{name}', which has the \
                     expected type '{ty}[Nullable=True]'. The expected type '{ty}[Nullable=True]' \
                     cannot be null but it can have null values."
                ),
            ));
        }
        if prop.collection || !prop.nullable {
            // ReaderValidationUtils_NullNamedValueForNonNullableType
            let ty = full_type(prop);
            return Err(odata(
                path,
                format!(
                    "A null value was found for the property named '{name}', which has the \
                     expected type '{ty}[Nullable=False]'. The expected type '{ty}[Nullable=False]' \
                     does not allow null values."
                ),
            ));
        }
        return Ok(());
    }
    if !prop.collection {
        return check_single(schema, prop.ty, value, Some(name), path);
    }
    let is_complex = schema.complex.contains_key(prop.ty);
    let Value::Array(items) = value else {
        let found = node(value);
        let message = if is_complex {
            // ODataJsonLightResourceDeserializer_CannotReadCollectionNestedResource
            format!(
                "A node of type '{found}' was read from the JSON reader when trying to read the \
                 contents of the property '{name}'; however, a 'StartArray' node was expected."
            )
        } else {
            // JsonReaderExtensions_UnexpectedNodeDetectedWithPropertyName, as Graph sent it for
            // a collection-of-strings property ('roleScopeTagIds').
            format!(
                "An unexpected '{found}' node was found for property named '{name}' when \
                 reading from the JSON reader. A 'StartArray' node was expected."
            )
        };
        return Err(odata(path, message));
    };
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        if item.is_null() {
            if !prop.nullable {
                // ReaderValidationUtils_NullValueForNonNullableType
                let ty = prop.ty;
                return Err(odata(
                    &item_path,
                    format!(
                        "A null value was found with the expected type '{ty}[Nullable=False]'. \
                         The expected type '{ty}[Nullable=False]' does not allow null values."
                    ),
                ));
            }
            continue;
        }
        check_single(schema, prop.ty, item, None, &item_path)?;
    }
    Ok(())
}

/// One non-null value of type `ty`; `property` is `None` for an item of a collection.
fn check_single(
    schema: &Schema,
    ty: &'static str,
    value: &Value,
    property: Option<&str>,
    path: &str,
) -> Result<(), SchemaViolation> {
    if let Some(def) = schema.complex.get(ty) {
        let Value::Object(obj) = value else {
            let found = node(value);
            let message = match property {
                // ODataJsonLightResourceDeserializer_CannotReadSingletonNestedResource
                Some(name) => format!(
                    "A node of type '{found}' was read from the JSON reader when trying to read \
                     the contents of the property '{name}'; however, a 'StartObject' node or \
                     'PrimitiveValue' node with null value was expected."
                ),
                // ODataJsonLightResourceDeserializer_InvalidNodeTypeForItemsInResourceSet
                None => format!(
                    "A node of type '{found}' was read from the JSON reader when trying to read \
                     the entries of a typed resource set; however, a node of type 'StartObject' \
                     or 'EndArray', or a null value, was expected."
                ),
            };
            return Err(odata(path, message));
        };
        // A payload may name a derived complex type; use it when the schema has it.
        let def = obj
            .get("@odata.type")
            .and_then(Value::as_str)
            .map(|t| t.trim_start_matches('#'))
            .and_then(|t| schema.complex.get(t))
            .unwrap_or(def);
        return check_object(schema, def, obj, path, false);
    }
    if matches!(value, Value::Array(_) | Value::Object(_)) {
        let found = node(value);
        let message = match property {
            // JsonReaderExtensions_UnexpectedNodeDetectedWithPropertyName
            Some(name) => format!(
                "An unexpected '{found}' node was found for property named '{name}' when \
                 reading from the JSON reader. A 'PrimitiveValue' node was expected."
            ),
            // JsonReaderExtensions_UnexpectedNodeDetected
            None => format!(
                "An unexpected '{found}' node was found when reading from the JSON reader. A \
                 'PrimitiveValue' node was expected."
            ),
        };
        return Err(odata(path, message));
    }
    if let Some(def) = schema.enums.get(ty) {
        let Value::String(s) = value else {
            // JsonReaderExtensions_CannotReadPropertyValueAsString / _CannotReadValueAsString
            let shown = literal(value);
            let message = match property {
                Some(name) => format!(
                    "Cannot read the value '{shown}' for the property '{name}' as a quoted JSON \
                     string value."
                ),
                None => format!("Cannot read the value '{shown}' as a quoted JSON string value."),
            };
            return Err(odata(path, message));
        };
        let known = |m: &str| def.members.iter().any(|d| *d == m.trim());
        let fits = if def.flags {
            s.split(',').all(known)
        } else {
            known(s)
        };
        if fits {
            return Ok(());
        }
        // .NET Enum.Parse's text; not confirmed on Graph's wire for directory enums (reported
        // with code RequestBodyRead for Outlook enums), chosen as the most common form.
        return Err(odata(path, format!("Requested value '{s}' was not found.")));
    }
    if primitive_fits(ty, value) {
        Ok(())
    } else {
        // ReaderValidationUtils_CannotConvertPrimitiveValue; e.g. Dataverse on the wire:
        // "Cannot convert the literal '0' to the expected type 'Edm.Boolean'."
        Err(odata(
            path,
            format!(
                "Cannot convert the literal '{}' to the expected type '{ty}'.",
                literal(value)
            ),
        ))
    }
}

/// Whether a JSON primitive converts to the Edm primitive type as ODataLib converts it: strings
/// go through .NET's invariant parsing (so `"true"` is a Boolean and `"5"` an Int32, as an AAD
/// API spec notes for Boolean), numbers and booleans must match the type's kind.
fn primitive_fits(ty: &str, value: &Value) -> bool {
    match (ty, value) {
        ("Edm.String", v) => v.is_string(),
        ("Edm.Boolean", Value::Bool(_)) => true,
        ("Edm.Boolean", Value::String(s)) => {
            let s = s.trim();
            s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false")
        }
        ("Edm.Int64", Value::Number(n)) => n.is_i64(),
        ("Edm.Int64", Value::String(s)) => s.trim().parse::<i64>().is_ok(),
        ("Edm.Int32" | "Edm.Int16" | "Edm.Byte" | "Edm.SByte", v) => {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            let range = match ty {
                "Edm.Int32" => i64::from(i32::MIN)..=i64::from(i32::MAX),
                "Edm.Int16" => i64::from(i16::MIN)..=i64::from(i16::MAX),
                "Edm.Byte" => 0..=255,
                _ => -128..=127,
            };
            n.is_some_and(|n| range.contains(&n))
        }
        ("Edm.Double" | "Edm.Single" | "Edm.Decimal", Value::Number(_)) => true,
        ("Edm.Double" | "Edm.Single", Value::String(s)) => {
            matches!(s.as_str(), "INF" | "-INF" | "NaN") || s.trim().parse::<f64>().is_ok()
        }
        ("Edm.Decimal", Value::String(s)) => s.trim().parse::<f64>().is_ok(),
        ("Edm.Guid", Value::String(s)) => is_guid(s.trim()),
        ("Edm.DateTimeOffset", Value::String(s)) => is_date_time_offset(s.trim()),
        ("Edm.Date", Value::String(s)) => is_date(s.trim()),
        ("Edm.TimeOfDay", Value::String(s)) => is_time_of_day(s.trim()),
        ("Edm.Duration", Value::String(s)) => s.starts_with('P') || s.starts_with("-P"),
        ("Edm.Binary", Value::String(s)) => {
            let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .is_ok()
        }
        // Types the sandbox's entities do not use (streams, spatial): not checked.
        (t, _) if !t.starts_with("Edm.") || matches!(t, "Edm.Stream" | "Edm.Untyped") => true,
        (t, _) if t.starts_with("Edm.Geography") || t.starts_with("Edm.Geometry") => true,
        _ => false,
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The formats `new Guid(string)` accepts for these values: `D` (8-4-4-4-12), `N` (32 digits),
/// and `D` wrapped in braces (`B`) or parentheses (`P`).
fn is_guid(s: &str) -> bool {
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .or_else(|| s.strip_prefix('(').and_then(|r| r.strip_suffix(')')));
    if let Some(inner) = inner {
        return is_hyphenated_guid(inner);
    }
    (s.len() == 32 && is_hex(s)) || is_hyphenated_guid(s)
}

fn is_hyphenated_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && is_hex(g))
}

/// ISO 8601 with a zone (`Z` or `±hh:mm`), as ODataLib requires for Edm.DateTimeOffset
/// (PlatformHelper_DateTimeOffsetMustContainTimeZone); seconds may be left out.
fn is_date_time_offset(s: &str) -> bool {
    let Some((date, rest)) = s.split_once(['T', 't']) else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    let (time, zone) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, None)
    } else if rest.len() > 6 && rest.is_char_boundary(rest.len() - 6) {
        let (t, z) = rest.split_at(rest.len() - 6);
        (t, Some(z))
    } else {
        return false;
    };
    if let Some(z) = zone {
        let b = z.as_bytes();
        let ok = z.is_ascii()
            && (b[0] == b'+' || b[0] == b'-')
            && b[3] == b':'
            && two_digits(&z[1..3]).is_some_and(|h| h <= 14)
            && two_digits(&z[4..6]).is_some_and(|m| m <= 59);
        if !ok {
            return false;
        }
    }
    is_time_of_day(time)
}

fn two_digits(s: &str) -> Option<u32> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `hh:mm[:ss[.fffffff]]`
fn is_time_of_day(s: &str) -> bool {
    let mut parts = s.splitn(3, ':');
    let (Some(h), Some(m)) = (parts.next(), parts.next()) else {
        return false;
    };
    let in_range = two_digits(h).is_some_and(|h| h <= 23) && two_digits(m).is_some_and(|m| m <= 59);
    if !in_range {
        return false;
    }
    match parts.next() {
        None => true,
        Some(sec) => {
            let (whole, fraction) = sec.split_once('.').unwrap_or((sec, "1"));
            two_digits(whole).is_some_and(|s| s <= 59)
                && !fraction.is_empty()
                && fraction.len() <= 7
                && fraction.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

/// `yyyy-mm-dd`, a real calendar date.
fn is_date(s: &str) -> bool {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    s.len() == 10 && time::Date::parse(s, &format).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test body must be an object"),
        }
    }

    fn user_violation(v: Value) -> SchemaViolation {
        validate_body("user", &body(v)).expect_err("body should be refused")
    }

    #[test]
    fn embedded_schema_loads() {
        let schema = load(SCHEMA_JSON).expect("embedded schema parses");
        for entity in [
            "user",
            "group",
            "organization",
            "domain",
            "subscribedSku",
            "licenseDetails",
            "directoryObject",
        ] {
            assert!(schema.entity(entity).is_some(), "{entity} missing");
        }
        for complex in [
            "passwordProfile",
            "assignedLicense",
            "onPremisesExtensionAttributes",
            "employeeOrgData",
            "objectIdentity",
            "verifiedDomain",
            "servicePlanInfo",
            "licenseUnitsDetail",
        ] {
            assert!(
                schema
                    .complex
                    .contains_key(format!("{NAMESPACE}{complex}").as_str()),
                "{complex} missing"
            );
        }
    }

    #[test]
    fn a_full_user_create_passes() {
        let b = body(json!({
            "@odata.type": "#microsoft.graph.user",
            "accountEnabled": true,
            "displayName": "Adele Vance",
            "mailNickname": "AdeleV",
            "userPrincipalName": "AdeleV@contoso.onmicrosoft.com",
            "passwordProfile": {
                "forceChangePasswordNextSignIn": true,
                "password": "xWwvJ]6NMw+bWH-d"
            },
            "usageLocation": "US",
            "onPremisesImmutableId": "abc123",
            "employeeId": "E-1",
            "businessPhones": ["+1 425 555 0109"],
            "assignedLicenses": [
                {"skuId": "6fd2c87f-b296-42f0-b197-1e91e994b900", "disabledPlans": []}
            ],
            "onPremisesExtensionAttributes": {"extensionAttribute1": "x"},
            "employeeOrgData": {"division": "Sales", "costCenter": "42"},
            "employeeHireDate": "2024-01-15T00:00:00Z",
            "identities": [
                {"signInType": "userPrincipalName", "issuer": "contoso.com", "issuerAssignedId": "a"}
            ],
            "manager@odata.bind": "https://graph.microsoft.com/v1.0/users/1f0f2e2a-1111-2222-3333-444455556666"
        }));
        assert_eq!(validate_body("user", &b), Ok(()));
    }

    #[test]
    fn a_group_create_with_members_passes() {
        let b = body(json!({
            "displayName": "Sales",
            "mailNickname": "sales",
            "mailEnabled": false,
            "securityEnabled": true,
            "groupTypes": [],
            "members@odata.bind": [
                "https://graph.microsoft.com/v1.0/directoryObjects/1f0f2e2a-1111-2222-3333-444455556666"
            ],
            "owners@odata.bind": ["https://graph.microsoft.com/v1.0/users/u1"]
        }));
        assert_eq!(validate_body("group", &b), Ok(()));
        let unified = body(json!({"groupTypes": ["Unified"], "visibility": "Private"}));
        assert_eq!(validate_body("group", &unified), Ok(()));
    }

    #[test]
    fn an_unknown_top_level_property_is_refused_by_the_directory() {
        let v = user_violation(json!({"displayName": "A", "favouriteColour": "blue"}));
        assert_eq!(v.status(), 400);
        assert_eq!(v.code(), "Request_BadRequest");
        assert_eq!(v.message(), "Invalid property 'favouriteColour'.");
        assert_eq!(v.property(), "favouriteColour");
    }

    #[test]
    fn an_unregistered_extension_property_is_named() {
        let v = user_violation(json!({"extension_0123_costCentre": "x"}));
        assert_eq!(v.code(), "Request_BadRequest");
        assert_eq!(
            v.message(),
            "The following extension properties are not available: extension_0123_costCentre."
        );
    }

    #[test]
    fn an_odata_layer_failure_wins_over_an_unknown_name_on_an_open_type() {
        let v = user_violation(json!({"foo": 1, "accountEnabled": "yes"}));
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(v.property(), "accountEnabled");
    }

    #[test]
    fn an_unknown_property_of_a_non_open_type_is_refused_by_odata() {
        let v = validate_body("domain", &body(json!({"isDefault": true, "colour": "red"})))
            .expect_err("refused");
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(
            v.message(),
            "The property 'colour' does not exist on type 'microsoft.graph.domain'. Make sure to \
             only use property names that are defined by the type or mark the type as open type."
        );
    }

    #[test]
    fn an_unknown_nested_property_is_refused() {
        let v = user_violation(json!({
            "passwordProfile": {"password": "x", "foo": true}
        }));
        assert_eq!(v.status(), 400);
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(v.property(), "passwordProfile.foo");
        assert_eq!(
            v.message(),
            "The property 'foo' does not exist on type 'microsoft.graph.passwordProfile'. Make \
             sure to only use property names that are defined by the type or mark the type as \
             open type."
        );
        let v = user_violation(json!({"assignedLicenses": [{"skuId": null, "sku": "E5"}]}));
        assert_eq!(v.property(), "assignedLicenses[0].sku");
    }

    #[test]
    fn a_string_for_a_boolean_is_refused() {
        let v = user_violation(json!({"accountEnabled": "yes"}));
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(v.property(), "accountEnabled");
        assert_eq!(
            v.message(),
            "Cannot convert the literal 'yes' to the expected type 'Edm.Boolean'."
        );
        // ODataLib converts the strings .NET parses as Boolean.
        assert_eq!(
            validate_body("user", &body(json!({"accountEnabled": "true"}))),
            Ok(())
        );
    }

    #[test]
    fn a_number_for_a_string_is_refused() {
        let v = user_violation(json!({"displayName": 5}));
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(
            v.message(),
            "Cannot convert the literal '5' to the expected type 'Edm.String'."
        );
        let v = user_violation(json!({"displayName": true}));
        assert_eq!(
            v.message(),
            "Cannot convert the literal 'True' to the expected type 'Edm.String'."
        );
    }

    #[test]
    fn a_string_for_a_collection_is_refused() {
        let v = user_violation(json!({"businessPhones": "x"}));
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(v.property(), "businessPhones");
        assert_eq!(
            v.message(),
            "An unexpected 'PrimitiveValue' node was found for property named 'businessPhones' \
             when reading from the JSON reader. A 'StartArray' node was expected."
        );
    }

    #[test]
    fn an_array_for_a_primitive_is_refused() {
        let v = user_violation(json!({"displayName": ["a"]}));
        assert_eq!(
            v.message(),
            "An unexpected 'StartArray' node was found for property named 'displayName' when \
             reading from the JSON reader. A 'PrimitiveValue' node was expected."
        );
    }

    #[test]
    fn a_primitive_for_a_complex_value_is_refused() {
        let v = user_violation(json!({"passwordProfile": "secret"}));
        assert_eq!(
            v.message(),
            "A node of type 'PrimitiveValue' was read from the JSON reader when trying to read \
             the contents of the property 'passwordProfile'; however, a 'StartObject' node or \
             'PrimitiveValue' node with null value was expected."
        );
        let v = user_violation(json!({"assignedLicenses": {"skuId": "x"}}));
        assert_eq!(
            v.message(),
            "A node of type 'StartObject' was read from the JSON reader when trying to read the \
             contents of the property 'assignedLicenses'; however, a 'StartArray' node was \
             expected."
        );
    }

    #[test]
    fn null_is_refused_where_the_csdl_forbids_it() {
        // accountEnabled is nullable in the v1.0 CSDL, so null passes the schema check.
        assert_eq!(
            validate_body(
                "user",
                &body(json!({"accountEnabled": null, "jobTitle": null}))
            ),
            Ok(())
        );
        // deviceEnrollmentLimit: Edm.Int32, Nullable="false".
        let v = user_violation(json!({"deviceEnrollmentLimit": null}));
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(
            v.message(),
            "A null value was found for the property named 'deviceEnrollmentLimit', which has \
             the expected type 'Edm.Int32[Nullable=False]'. The expected type \
             'Edm.Int32[Nullable=False]' does not allow null values."
        );
        // businessPhones: Collection(Edm.String), Nullable="false".
        let v = user_violation(json!({"businessPhones": null}));
        assert_eq!(
            v.message(),
            "A null value was found for the property named 'businessPhones', which has the \
             expected type 'Collection(Edm.String)[Nullable=False]'. The expected type \
             'Collection(Edm.String)[Nullable=False]' does not allow null values."
        );
        let v = user_violation(json!({"businessPhones": [null]}));
        assert_eq!(v.property(), "businessPhones[0]");
        assert_eq!(
            v.message(),
            "A null value was found with the expected type 'Edm.String[Nullable=False]'. The \
             expected type 'Edm.String[Nullable=False]' does not allow null values."
        );
    }

    #[test]
    fn a_bad_guid_is_refused() {
        let v = user_violation(json!({"assignedLicenses": [{"skuId": "not-a-guid"}]}));
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(v.property(), "assignedLicenses[0].skuId");
        assert_eq!(
            v.message(),
            "Cannot convert the literal 'not-a-guid' to the expected type 'Edm.Guid'."
        );
        for good in [
            "6fd2c87f-b296-42f0-b197-1e91e994b900",
            "6FD2C87FB29642F0B1971E91E994B900",
            "{6fd2c87f-b296-42f0-b197-1e91e994b900}",
        ] {
            let b = body(json!({"assignedLicenses": [{"skuId": good}]}));
            assert_eq!(validate_body("user", &b), Ok(()), "{good}");
        }
    }

    #[test]
    fn date_time_offsets_need_a_zone() {
        let v = user_violation(json!({"employeeHireDate": "2024-01-15T00:00:00"}));
        assert_eq!(
            v.message(),
            "Cannot convert the literal '2024-01-15T00:00:00' to the expected type \
             'Edm.DateTimeOffset'."
        );
        for good in [
            "2024-01-15T00:00:00Z",
            "2024-01-15T08:30:00.1234567+02:00",
            "2024-01-15T08:30Z",
        ] {
            let b = body(json!({"employeeHireDate": good}));
            assert_eq!(validate_body("user", &b), Ok(()), "{good}");
        }
        let v = user_violation(json!({"employeeHireDate": "2024-02-30T00:00:00Z"}));
        assert_eq!(v.property(), "employeeHireDate");
    }

    #[test]
    fn binds_must_name_a_navigation_property_with_the_right_shape() {
        let v =
            user_violation(json!({"boss@odata.bind": "https://graph.microsoft.com/v1.0/users/x"}));
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(
            v.message(),
            "An undeclared property 'boss' which only has property annotations in the payload \
             but no property value was found in the payload. In OData, only declared navigation \
             properties and declared named streams can be represented as properties without \
             values."
        );
        let v = user_violation(json!({"manager@odata.bind": ["https://x/users/1"]}));
        assert_eq!(
            v.message(),
            "The resource reference navigation property 'manager' has a property annotation \
             'odata.bind' with an array value. Resource reference navigation properties can \
             only have a property annotation 'odata.bind' with a string value."
        );
        let v = validate_body(
            "group",
            &body(json!({"members@odata.bind": "https://x/directoryObjects/1"})),
        )
        .expect_err("refused");
        assert_eq!(
            v.message(),
            "The resource set reference navigation property 'members' has a property annotation \
             'odata.bind' with a string value. Resource set reference navigation properties can \
             only have a property annotation 'odata.bind' with an array value."
        );
    }

    #[test]
    fn enum_values_must_name_a_member() {
        // organization.mobileDeviceManagementAuthority: microsoft.graph.mdmAuthority
        let ok = body(json!({"mobileDeviceManagementAuthority": "intune"}));
        assert_eq!(validate_body("organization", &ok), Ok(()));
        let v = validate_body(
            "organization",
            &body(json!({"mobileDeviceManagementAuthority": "nobody"})),
        )
        .expect_err("refused");
        assert_eq!(v.message(), "Requested value 'nobody' was not found.");
    }

    #[test]
    fn select_accepts_declared_and_navigation_properties() {
        assert_eq!(
            validate_select(
                "user",
                &[
                    "id",
                    "displayName",
                    "userPrincipalName",
                    "manager",
                    "accountEnabled"
                ]
            ),
            Ok(())
        );
        assert_eq!(validate_select("user", &["DisplayName", "*"]), Ok(()));
        assert_eq!(
            validate_select("subscribedSku", &["skuId", "prepaidUnits", "consumedUnits"]),
            Ok(())
        );
    }

    #[test]
    fn select_of_an_unknown_property_on_a_directory_type_is_unsupported() {
        let v = validate_select("user", &["id", "shoeSize"]).expect_err("refused");
        assert_eq!(v.status(), 400);
        assert_eq!(v.code(), "Request_UnsupportedQuery");
        assert_eq!(
            v.message(),
            "Property 'shoeSize' does not exist as a declared property or extension property."
        );
        assert_eq!(v.property(), "shoeSize");
    }

    #[test]
    fn select_of_an_unknown_property_on_a_non_open_type_fails_to_parse() {
        let v = validate_select("subscribedSku", &["skuId", "price"]).expect_err("refused");
        assert_eq!(v.code(), "BadRequest");
        assert_eq!(
            v.message(),
            "Parsing OData Select and Expand failed: Could not find a property named 'price' on \
             type 'microsoft.graph.subscribedSku'."
        );
    }

    #[test]
    fn property_names_include_inherited_ones() {
        let names = property_names("user");
        assert!(names.contains(&"userPrincipalName"));
        assert!(names.contains(&"id"));
        assert!(names.contains(&"deletedDateTime"));
        assert_eq!(names.first(), Some(&"id"));
        assert!(
            !names.contains(&"manager"),
            "navigation properties are not structural"
        );
        assert!(has_property("group", "securityEnabled"));
        assert!(has_property("licenseDetails", "skuPartNumber"));
        assert!(!has_property("user", "shoeSize"));
        assert!(property_names("nonsense").is_empty());
    }

    #[test]
    fn an_unknown_entity_is_a_sandbox_error() {
        let v = validate_body("printer", &Map::new()).expect_err("refused");
        assert_eq!(v.status(), 500);
        assert_eq!(v.code(), "UnknownError");
    }
}
