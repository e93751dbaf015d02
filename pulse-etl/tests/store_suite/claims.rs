//! Claims: the oldest due run first, only the claiming instance's jobs, one run per job,
//! and each run once however many instances claim at the same time.

use std::collections::HashSet;
use std::sync::Arc;

use pulse_etl::{
    AttemptFence, AttemptOutcome, InstanceId, JobStore, RunEventKind, RunId, RunState,
};

use super::{LEASE, T0, create, jobs, new_run, secs};

pub async fn claims_oldest_due_run_of_registered_jobs(store: Arc<dyn JobStore>) {
    let a = create(&*store, new_run("a", T0)).await;
    let b = create(&*store, new_run("b", T0 + secs(1))).await;
    create(&*store, new_run("unregistered", T0 - secs(10))).await;
    let instance = InstanceId::new();
    let names = jobs(&["a", "b"]);
    let first = store
        .claim(instance, &names, T0 + secs(2), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.run.id, a.id);
    assert_eq!(first.run.state, RunState::Running);
    assert_eq!(first.run.attempts, 1);
    assert_eq!(first.run.started_at, Some(T0 + secs(2)));
    assert_eq!(
        first.fence,
        AttemptFence {
            run_id: a.id,
            attempt: 1,
            instance_id: instance
        }
    );
    assert_eq!(first.lease_expires_at, T0 + secs(2) + LEASE);
    let second = store
        .claim(instance, &names, T0 + secs(2), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.run.id, b.id);
    assert!(
        store
            .claim(instance, &names, T0 + secs(2), LEASE)
            .await
            .unwrap()
            .is_none()
    );
    let attempts = store.attempts(a.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].instance_id, instance);
    assert_eq!(attempts[0].outcome, None);
}

/// Instances that run different jobs share one store: each claims only its own jobs,
/// however the lists overlap or are ordered, and a finish claims only the finishing
/// instance's jobs.
pub async fn each_instance_claims_only_the_jobs_it_runs(store: Arc<dyn JobStore>) {
    for (i, job) in ["a", "b", "c", "d"].iter().enumerate() {
        let at = T0 + secs(u64::try_from(i).unwrap());
        create(&*store, new_run(job, at)).await;
    }
    let now = T0 + secs(10);
    let (left, right) = (InstanceId::new(), InstanceId::new());
    let c_only = store
        .claim_many(right, &jobs(&["c", "zz"]), now, LEASE, 8)
        .await
        .unwrap();
    let names = |claims: &[pulse_etl::Claim]| {
        let mut names: Vec<String> = claims.iter().map(|c| c.run.job_name.clone()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&c_only), ["c"]);
    // The same names in another order, plus one more.
    let b_and_d = store
        .claim_many(left, &jobs(&["d", "b", "c"]), now, LEASE, 8)
        .await
        .unwrap();
    assert_eq!(names(&b_and_d), ["b", "d"]);
    // A finish claims the next run of the finishing instance's jobs only: `a` is due,
    // but `c`'s instance does not run it.
    let c = &c_only[0];
    let (_, next) = store
        .finish_and_claim(
            &c.fence,
            AttemptOutcome::Succeeded { result: None },
            now,
            &jobs(&["c", "zz"]),
            LEASE,
        )
        .await
        .unwrap();
    assert!(next.is_none(), "{next:?}");
    let a = store
        .claim_many(left, &jobs(&["a"]), now, LEASE, 8)
        .await
        .unwrap();
    assert_eq!(names(&a), ["a"]);
}

pub async fn claim_many_takes_the_oldest_due_runs_one_per_job(store: Arc<dyn JobStore>) {
    let a = create(&*store, new_run("a", T0)).await;
    let b = create(&*store, new_run("b", T0 + secs(1))).await;
    let c = create(&*store, new_run("c", T0 + secs(2))).await;
    create(&*store, new_run("unregistered", T0 - secs(10))).await;
    let instance = InstanceId::new();
    let names = jobs(&["a", "b", "c"]);
    let first = store
        .claim_many(instance, &names, T0 + secs(5), LEASE, 2)
        .await
        .unwrap();
    let ids: Vec<RunId> = first.iter().map(|claim| claim.run.id).collect();
    assert_eq!(ids, [a.id, b.id], "the two oldest, no more than asked");
    for claim in &first {
        assert_eq!(claim.run.state, RunState::Running);
        assert_eq!(
            claim.fence,
            AttemptFence {
                run_id: claim.run.id,
                attempt: 1,
                instance_id: instance
            }
        );
        assert_eq!(store.attempts(claim.run.id).await.unwrap().len(), 1);
    }
    // `b` fails and is due again at once: its second attempt comes in the next batch,
    // with `c`, and its `running` event carries attempt 2.
    store
        .finish_attempt(
            &first[1].fence,
            AttemptOutcome::Failed {
                error: "boom".to_owned(),
                retry_at: Some(T0 + secs(5)),
            },
            T0 + secs(5),
        )
        .await
        .unwrap();
    let second = store
        .claim_many(instance, &names, T0 + secs(6), LEASE, 8)
        .await
        .unwrap();
    let mut ids: Vec<(RunId, u32)> = second
        .iter()
        .map(|claim| (claim.run.id, claim.fence.attempt))
        .collect();
    ids.sort();
    let mut expected = vec![(b.id, 2), (c.id, 1)];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(
        store
            .claim_many(instance, &names, T0 + secs(6), LEASE, 8)
            .await
            .unwrap()
            .is_empty()
    );
    let running: Vec<(RunId, u32)> = store
        .events_since(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|event| match event.kind {
            RunEventKind::State {
                state: RunState::Running,
                attempt,
                ..
            } => Some((event.run_id, attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(running.len(), 4);
    let mut earlier = running[..2].to_vec();
    earlier.sort();
    let mut first_batch = vec![(a.id, 1), (b.id, 1)];
    first_batch.sort();
    assert_eq!(earlier, first_batch);
    let mut later = running[2..].to_vec();
    later.sort();
    assert_eq!(later, expected);
}

pub async fn concurrent_claims_take_each_run_once(store: Arc<dyn JobStore>) {
    let names: Vec<String> = (0..24).map(|i| format!("job_{i}")).collect();
    for name in &names {
        create(&*store, new_run(name, T0)).await;
    }
    let names = Arc::new(names);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = Arc::clone(&store);
        let names = Arc::clone(&names);
        tasks.push(tokio::spawn(async move {
            let instance = InstanceId::new();
            let mut mine = Vec::new();
            while let Some(claim) = store
                .claim(instance, &names, T0 + secs(1), LEASE)
                .await
                .unwrap()
            {
                mine.push(claim.run.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 24);
    assert_eq!(unique.len(), 24);
}
