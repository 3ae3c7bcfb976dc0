//! The schools (authorization servers) a gateway signs users in at, by id. A session, a
//! login state and a cached token validation each record the id of their school, so that
//! with several schools one school's credentials never pass at another. Today a gateway
//! has exactly one school, [`DEFAULT_SCHOOL`].

use super::LoopwiseClient;

/// The id of the single school configured by `[loopwise]`.
pub const DEFAULT_SCHOOL: &str = "default";

/// One school: its id and its client.
#[derive(Debug, Clone)]
pub struct School {
    pub id: String,
    pub client: LoopwiseClient,
}

/// Every school of a gateway generation (never empty).
#[derive(Debug, Clone)]
pub struct Schools {
    only: School,
}

impl Schools {
    /// A gateway with one school, [`DEFAULT_SCHOOL`].
    pub fn single(client: LoopwiseClient) -> Schools {
        Schools {
            only: School {
                id: DEFAULT_SCHOOL.to_string(),
                client,
            },
        }
    }

    /// The school a recorded id names. An empty id (sealed before ids were recorded)
    /// means the only school.
    pub fn get(&self, id: &str) -> Option<&School> {
        (id.is_empty() || id == self.only.id).then_some(&self.only)
    }

    /// The school routes use while there is one.
    pub fn only(&self) -> &School {
        &self.only
    }
}
