//! The schools (authorization servers) a gateway signs users in at, by name. A session, a
//! login state and a cached token validation each record the name of their school, so
//! that one school's credentials never pass at another.

use super::LoopwiseClient;

/// The name of the school a single, unnamed `[loopwise]` table configures. Its session
/// cookie keeps the plain `session.cookie_name`, so sessions made before schools had
/// names stay valid.
pub const DEFAULT_SCHOOL: &str = "default";

/// One school: its name, how the chooser shows it, and its client.
#[derive(Debug, Clone)]
pub struct School {
    pub id: String,
    pub display_name: String,
    pub client: LoopwiseClient,
}

/// Every school of a gateway generation (never empty), in the configured order.
#[derive(Debug, Clone)]
pub struct Schools {
    all: Vec<School>,
}

impl Schools {
    /// The registry of `schools`; `None` when there are none or two share a name.
    pub fn new(schools: Vec<School>) -> Option<Schools> {
        let unique = schools
            .iter()
            .enumerate()
            .all(|(i, s)| schools[..i].iter().all(|o| o.id != s.id));
        (!schools.is_empty() && unique).then_some(Schools { all: schools })
    }

    /// A gateway with one school, [`DEFAULT_SCHOOL`].
    pub fn single(client: LoopwiseClient) -> Schools {
        Schools {
            all: vec![School {
                id: DEFAULT_SCHOOL.to_string(),
                display_name: DEFAULT_SCHOOL.to_string(),
                client,
            }],
        }
    }

    /// The school a recorded name names. An empty name (sealed before names were
    /// recorded) means [`DEFAULT_SCHOOL`].
    pub fn get(&self, id: &str) -> Option<&School> {
        let id = if id.is_empty() { DEFAULT_SCHOOL } else { id };
        self.all.iter().find(|s| s.id == id)
    }

    /// The school whose issuer is `issuer` (a JWT's `iss`).
    pub fn by_issuer(&self, issuer: &str) -> Option<&School> {
        self.all.iter().find(|s| s.client.issuer() == issuer)
    }

    /// The first school configured (start-up logs, the demo).
    pub fn first(&self) -> &School {
        &self.all[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &School> {
        self.all.iter()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::client::Metadata;

    fn school(id: &str, issuer: &str) -> School {
        let http: std::sync::Arc<dyn crate::oauth::HttpClient> = std::sync::Arc::new(
            crate::oauth::ReqwestClient::new(std::time::Duration::from_secs(1), None).unwrap(),
        );
        let mut metadata = Metadata::fixture();
        metadata.issuer = issuer.into();
        School {
            id: id.into(),
            display_name: id.to_uppercase(),
            client: LoopwiseClient::new(http, metadata, "c".into(), None, "http://gw/cb".into()),
        }
    }

    #[test]
    fn schools_are_found_by_name_and_by_issuer_never_by_another() {
        let s = Schools::new(vec![
            school("north", "https://north.example"),
            school("south", "https://south.example"),
        ])
        .unwrap();
        assert_eq!(s.get("north").unwrap().id, "north");
        assert_eq!(s.get("south").unwrap().id, "south");
        assert!(
            s.get("").is_none(),
            "an unnamed record is the default school's"
        );
        assert!(s.get("west").is_none());
        assert_eq!(s.by_issuer("https://south.example").unwrap().id, "south");
        assert!(s.by_issuer("https://south.example/").is_none());
        assert!(s.by_issuer("https://evil.example").is_none());
    }

    #[test]
    fn an_empty_or_ambiguous_registry_is_refused() {
        assert!(Schools::new(Vec::new()).is_none());
        assert!(Schools::new(vec![
            school("north", "https://a.example"),
            school("north", "https://b.example"),
        ])
        .is_none());
        let single = Schools::new(vec![school(DEFAULT_SCHOOL, "https://a.example")]).unwrap();
        assert_eq!(single.get("").unwrap().id, DEFAULT_SCHOOL);
    }
}
