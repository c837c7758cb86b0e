//! The store's tests run against both backends: each test is an `async fn(TestDb)`, and
//! [`both_backends!`] makes a `sqlite` and a `postgres` test of it (a module named after the
//! function). The PostgreSQL one uses the process's throwaway cluster
//! ([`tessera_test_pg::Cluster::shared`]) with a fresh database per test.

use std::path::PathBuf;

use super::Store;

/// One test's database: a SQLite file in a temporary directory, or a fresh database in the
/// throwaway PostgreSQL cluster.
pub(crate) struct TestDb {
    url: String,
    dir: Option<tempfile::TempDir>,
    #[cfg(feature = "postgres")]
    _cluster: Option<std::sync::Arc<tessera_test_pg::Cluster>>,
}

impl TestDb {
    pub(crate) fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        TestDb {
            url: format!("sqlite://{}", dir.path().join(super::DB_FILE).display()),
            dir: Some(dir),
            #[cfg(feature = "postgres")]
            _cluster: None,
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres() -> TestDb {
        let cluster = tokio::task::spawn_blocking(tessera_test_pg::Cluster::shared)
            .await
            .unwrap();
        TestDb {
            url: cluster.database().await,
            dir: None,
            _cluster: Some(cluster),
        }
    }

    /// A new `Store` on this database (no keyring): as many as a test wants, like replicas.
    pub(crate) async fn open(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }

    /// The URL for a raw `Any` pool (SQLite: the file is created if missing).
    pub(crate) fn any_url(&self) -> String {
        if self.dir.is_some() {
            format!("{}?mode=rwc", self.url)
        } else {
            self.url.clone()
        }
    }

    /// The SQLite file (`None` on PostgreSQL).
    pub(crate) fn sqlite_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join(super::DB_FILE))
    }
}

/// `both_backends!(a, b)` for `async fn a(db: TestDb)` …: tests `a::sqlite`, `a::postgres`, ….
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::store::test_db::TestDb::sqlite()).await;
                }

                #[cfg(feature = "postgres")]
                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::store::test_db::TestDb::postgres().await).await;
                }
            }
        )*
    };
}
pub(crate) use both_backends;
