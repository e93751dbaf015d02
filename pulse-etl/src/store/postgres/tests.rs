//! Unit tests of the PostgreSQL store (they need `PULSE_TEST_DATABASE_URL`).

/// What the PostgreSQL unit tests share.
pub(super) mod test_support {
    use crate::model::RunId;
    use crate::store::NewRun;
    use crate::store::postgres::{PgStore, PgStoreOptions};

    /// A store in a fresh schema of `PULSE_TEST_DATABASE_URL`, with the URL and the
    /// schema's name.
    pub(crate) async fn fresh_store() -> (PgStore, String, String) {
        let url = std::env::var("PULSE_TEST_DATABASE_URL").expect("PULSE_TEST_DATABASE_URL");
        let schema = format!("etl_test_{}", uuid::Uuid::new_v4().simple());
        let store = PgStore::connect_with(PgStoreOptions::new(&url).with_schema(&schema))
            .await
            .unwrap();
        (store, url, schema)
    }

    /// A start of `job`, now.
    pub(crate) fn start(job: &str) -> NewRun {
        NewRun {
            id: RunId::new(),
            job_name: job.to_owned(),
            params: serde_json::json!({}),
            requested_by: None,
            idempotency_key: None,
            max_attempts: 1,
            force: false,
            created_at: time::OffsetDateTime::now_utc(),
        }
    }
}

mod job_sets {
    use std::hash::BuildHasher;

    use super::test_support::{fresh_store, start};
    use crate::model::InstanceId;
    use crate::store::{CreateOutcome, JobStore};

    /// Another set holding the id our names digest to (a collision, or a foreign write):
    /// the store registers its names under the next id, and claims only its own jobs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
    async fn a_taken_job_set_id_moves_the_set_to_the_next_one() {
        let (store, _, schema) = fresh_store().await;
        let ours = vec!["ours".to_owned()];
        let digest = foldhash::fast::FixedState::with_seed(0).hash_one(&ours[..]);
        let taken = i64::from_ne_bytes(digest.to_ne_bytes());
        sqlx::query("INSERT INTO etl_job_sets (set_id, job_name) VALUES ($1, 'theirs')")
            .bind(taken)
            .execute(store.pg_pool())
            .await
            .unwrap();
        for job in ["theirs", "ours"] {
            let created = store.create_run(start(job)).await.unwrap();
            assert!(matches!(created, CreateOutcome::Created { .. }));
        }
        let now = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
        let lease = std::time::Duration::from_secs(30);
        let claims = store
            .claim_many(InstanceId::new(), &ours, now, lease, 8)
            .await
            .unwrap();
        let claimed: Vec<&str> = claims.iter().map(|c| c.run.job_name.as_str()).collect();
        assert_eq!(claimed, ["ours"]);
        let sets: Vec<(i64, String)> =
            sqlx::query_as("SELECT set_id, job_name FROM etl_job_sets ORDER BY set_id, job_name")
                .fetch_all(store.pg_pool())
                .await
                .unwrap();
        let mut expected = vec![
            (taken, "theirs".to_owned()),
            (taken.wrapping_add(1), "ours".to_owned()),
        ];
        expected.sort();
        assert_eq!(sets, expected);

        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(store.pg_pool())
            .await
            .unwrap();
        store.close().await;
    }
}
