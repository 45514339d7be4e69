//! Validated End User authorisations (15 CFR 748.15, Supplement No. 7 to part 748;
//! `policies/veu.toml`): an entity of a given type in a country may receive the named ECCNs at
//! the named facilities, from the date of its Federal Register notice until it is revoked.
//! Pure: parsed from text.

use crate::data::{check_country, date, Ctx, PolicyError};
use serde::Deserialize;
use time::Date;
use toml::Spanned;

/// One facility of an authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facility {
    /// The id host evidence names (its `facility` claim).
    pub id: String,
    /// Street address as the authorisation lists it.
    pub address: String,
}

/// A VEU authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veu {
    /// Id.
    pub id: String,
    /// The validated end user (an organisation id).
    pub entity: String,
    /// What kind of entity (e.g. data center).
    pub entity_type: String,
    /// Country of its facilities.
    pub country: String,
    /// Eligible items.
    pub eccns: Vec<String>,
    /// The facilities items may go to.
    pub facilities: Vec<Facility>,
    /// Federal Register citation.
    pub citation: String,
    /// First day.
    pub authorised: Date,
    /// Day it stops, when revoked (with the citation).
    pub revoked: Option<(Date, String)>,
}

impl Veu {
    /// In force on `d`.
    pub fn in_force(&self, d: Date) -> bool {
        self.authorised <= d && self.revoked.as_ref().is_none_or(|(r, _)| d < *r)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VeuFile {
    #[serde(default)]
    veu: Vec<VeuEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VeuEntry {
    id: Spanned<String>,
    entity: Spanned<String>,
    entity_type: String,
    country: Spanned<String>,
    eccns: Vec<String>,
    citation: String,
    authorised: Spanned<toml::value::Datetime>,
    #[serde(default)]
    revoked: Option<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    revoked_citation: Option<String>,
    #[serde(rename = "facility")]
    facilities: Vec<FacilityFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FacilityFile {
    id: Spanned<String>,
    address: String,
}

/// The authorisations, and the entity ids still to check against the organisations.
pub(crate) fn parse_veu(ctx: &Ctx<'_>) -> Result<(Vec<Veu>, Vec<Spanned<String>>), PolicyError> {
    let f: VeuFile = ctx.parse()?;
    let mut out: Vec<Veu> = Vec::new();
    let mut entities = Vec::new();
    for v in f.veu {
        if out.iter().any(|o| &o.id == v.id.get_ref()) {
            return Err(ctx.at(
                &v.id,
                format!("duplicate VEU authorisation '{}'", v.id.get_ref()),
            ));
        }
        for e in &v.eccns {
            crate::classify::check_eccn(e).map_err(|m| ctx.at(&v.id, m.to_string()))?;
        }
        let authorised = date(ctx, &v.authorised)?;
        let revoked = match (&v.revoked, v.revoked_citation) {
            (Some(r), Some(c)) => Some((date(ctx, r)?, c)),
            (Some(r), None) => return Err(ctx.at(r, "a revocation needs its revoked_citation")),
            (None, Some(_)) => return Err(ctx.at(&v.id, "revoked_citation without revoked")),
            (None, None) => None,
        };
        if v.facilities.is_empty() {
            return Err(ctx.at(
                &v.id,
                "a VEU authorisation names at least one [[veu.facility]]",
            ));
        }
        let mut facilities: Vec<Facility> = Vec::new();
        for fa in v.facilities {
            if facilities.iter().any(|x| &x.id == fa.id.get_ref()) {
                return Err(ctx.at(&fa.id, format!("duplicate facility '{}'", fa.id.get_ref())));
            }
            facilities.push(Facility {
                id: fa.id.get_ref().clone(),
                address: fa.address,
            });
        }
        out.push(Veu {
            id: v.id.get_ref().clone(),
            entity: v.entity.get_ref().clone(),
            entity_type: v.entity_type,
            country: check_country(v.country.get_ref())
                .map_err(|m| ctx.at(&v.country, m.to_string()))?,
            eccns: v.eccns,
            facilities,
            citation: v.citation,
            authorised,
            revoked,
        });
        entities.push(v.entity);
    }
    Ok((out, entities))
}
