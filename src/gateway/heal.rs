//! Registration that heals: the school answered `invalid_client` (at a code exchange or a
//! refresh), i.e. it forgot the client. A client that registered itself registers again
//! (at most once a minute, see `LoopwiseClient::reregister`), logged and counted in
//! `loopgate_reregistrations_total`; a configured client cannot, and is refused.

use super::Gateway;
use crate::oauth::School;

/// Registers `school`'s client again; whether it did (the next login then uses the new
/// client id). A configured client, or one that registered again less than a minute ago,
/// does not; a failure is logged and counted.
pub(super) async fn reregister(gw: &Gateway, school: &School, now: u64) -> bool {
    let count = |result: &str| {
        gw.shared
            .metrics
            .reregistrations
            .with_label_values(&[&school.id, result])
            .inc()
    };
    match school.client.reregister(now).await {
        Ok(Some(client_id)) => {
            count("ok");
            tracing::warn!(school = %school.id, %client_id, "the school no longer knew the client: registered again; the next login uses the new client");
            true
        }
        Ok(None) => {
            tracing::warn!(school = %school.id, "the school does not know the client and it cannot register again now (a configured client_id, or registered again less than a minute ago)");
            false
        }
        Err(e) => {
            count("error");
            tracing::error!(school = %school.id, error = %e, "the school no longer knows the client and registering again failed");
            false
        }
    }
}

impl Gateway {
    /// The schools whose client registered itself and wants it checked, with how often.
    fn checked_registrations(&self) -> impl Iterator<Item = (&School, std::time::Duration)> {
        self.schools
            .iter()
            .filter(|s| s.client.is_registered_dynamically())
            .filter_map(|s| Some((s, self.config.school(&s.id)?.registration_check)))
            .filter(|(_, every)| !every.is_zero())
    }

    /// Asks every school of [`checked_registrations`](Self::checked_registrations) whether
    /// it still knows the client, and registers again where it forgot: a forgotten client
    /// otherwise shows up only as the school's error page at the next login, which the
    /// gateway never sees. Run every `registration_check` by the runtime.
    pub(crate) async fn check_registrations(&self, now: u64) {
        for (school, _) in self.checked_registrations() {
            if school.client.registration_forgotten().await {
                tracing::warn!(school = %school.id, "the school no longer knows the registered client");
                reregister(self, school, now).await;
            }
        }
    }

    /// How long until the next registration check: the shortest `registration_check` of
    /// the checked schools; `None` when there are none.
    pub(crate) fn registration_check_every(&self) -> Option<std::time::Duration> {
        self.checked_registrations().map(|(_, every)| every).min()
    }
}
