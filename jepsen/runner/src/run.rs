//! The `test` command: set up (a local cluster, or an existing one), create the topic, run the
//! workload with the nemesis for `--duration` while printing progress, stop the faults and
//! heal, let every send resolve, read everything back, check, and write the report.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxbow_jepsen::history::{Delivery, History};

use crate::cli::{NemesisKind, TestArgs};
use crate::cluster::{LocalCluster, Setup};
use crate::nemesis::{self, Events, Nemesis};
use crate::proxy::Grudge;
use crate::report::{self, Phases};
use crate::workload::{self, Clock, Stats};

/// Runs `test`: exit 0 when the history is valid, 1 when anomalies were found, 2 when the
/// run could not be carried out.
pub fn run(args: TestArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("oxbow-jepsen test: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = test(args) => result,
            _ = interrupted() => Err("interrupted: the run was stopped before its end (its processes are stopped too)".to_string()),
        }
    });
    // Dropping the runtime drops every task, and with them the local cluster, whose drop
    // kills its nodes.
    drop(runtime);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("oxbow-jepsen test: {e}");
            ExitCode::from(2)
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

fn check_args(args: &TestArgs) -> Result<(), String> {
    if args.bootstrap.is_none() && args.cluster.is_none() {
        return Err(
            "say which cluster to test: --bootstrap HOST:PORT,... (an existing cluster) or --cluster local --binary PATH (real oxbow node processes started here)".into(),
        );
    }
    if args.bootstrap.is_some() && args.nemesis != NemesisKind::None {
        return Err(format!(
            "--nemesis {} needs a cluster this run controls: use --cluster local --binary PATH, or --nemesis none with --bootstrap",
            args.nemesis.name()
        ));
    }
    if args.cluster.is_some() && usize::try_from(args.replication).unwrap_or(0) > args.nodes {
        return Err(format!(
            "--replication {} is more than --nodes {}: lower it or add nodes",
            args.replication, args.nodes
        ));
    }
    if args.producers == 0 || args.rate == 0 || args.partitions < 1 || args.keys == 0 {
        return Err("--producers, --rate, --partitions and --keys must be at least 1".into());
    }
    Ok(())
}

async fn test(args: TestArgs) -> Result<bool, String> {
    check_args(&args)?;
    let out = args.out.clone();
    std::fs::create_dir_all(&out).map_err(|e| {
        format!(
            "cannot create the output directory {}: {e}; pass a writable --out",
            out.display()
        )
    })?;
    let clock = Clock::start();
    let grudge = args.nemesis.partitions().then(Grudge::default);
    let cluster = match (&args.cluster, &args.binary) {
        (Some(_), Some(binary)) => Some(Arc::new(Mutex::new(LocalCluster::start(
            binary,
            &out.join("nodes"),
            args.nodes,
            grudge.as_ref(),
            Setup {
                power: args.nemesis.power(),
                planted_bugs: args.planted_bugs.clone(),
                extra_config: args.node_config.clone(),
                clock: args.nemesis.clock(),
                disk: args.nemesis.disk(),
            },
        )?))),
        // No --binary with --cluster: clap refused it (`requires = "binary"`).
        _ => None,
    };
    let bootstrap = match (&cluster, &args.bootstrap) {
        (Some(cluster), _) => cluster.lock().expect("not poisoned").bootstrap(),
        (None, Some(bootstrap)) => bootstrap.clone(),
        (None, None) => unreachable!("checked"),
    };
    let topic = args.topic.clone().unwrap_or_else(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("jepsen-queue-{}-{now}", args.seed)
    });
    let target = match &cluster {
        Some(_) => format!(
            "local cluster of {} nodes at {bootstrap} (logs and data in {})",
            args.nodes,
            out.join("nodes").display()
        ),
        None => format!("cluster at {bootstrap}"),
    };
    println!(
        "oxbow-jepsen test: workload queue, nemesis {}, seed {}, {:?} of faults; {target}; topic {topic}",
        args.nemesis.name(),
        args.seed,
        args.duration
    );
    let client = workload::client(&bootstrap)?;
    workload::create_topic(
        &client,
        &topic,
        args.partitions,
        args.replication,
        Duration::from_secs(60),
    )
    .await?;
    let started_ms = clock.ms();
    println!(
        "[{:>6.1}s] topic {topic} ready ({} partitions, replication {}); the workload starts",
        started_ms as f64 / 1000.0,
        args.partitions,
        args.replication
    );

    let history = Arc::new(Mutex::new(History::default()));
    let stats = Arc::new(Stats::default());
    let events: Events = Arc::default();
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let stop_nemesis = Arc::new(AtomicBool::new(false));
    let stop_progress = Arc::new(AtomicBool::new(false));

    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..args.readers {
        readers.spawn(workload::read_during_run(
            reader,
            bootstrap.clone(),
            topic.clone(),
            args.partitions,
            history.clone(),
            stats.clone(),
            clock,
            stop_readers.clone(),
        ));
    }
    let stop_group = Arc::new(AtomicBool::new(false));
    let group = (args.group_members > 0).then(|| {
        history.lock().expect("not poisoned").group.ran = true;
        tokio::spawn(workload::run_group(workload::Group {
            bootstrap: bootstrap.clone(),
            group: format!("{topic}-group"),
            topic: topic.clone(),
            members: args.group_members,
            crash_every: (args.member_crash_every != (0, 0)).then_some(args.member_crash_every),
            seed: args.seed,
            history: history.clone(),
            clock,
            stop_crashes: stop_nemesis.clone(),
            stop: stop_group.clone(),
        }))
    });
    let mut producers = tokio::task::JoinSet::new();
    let interval_ms = (args.producers as u64 * 1000 / args.rate).max(1);
    for index in 0..args.producers {
        let kind = if index % 2 == 0 {
            Delivery::Idempotent
        } else {
            Delivery::AtLeastOnce
        };
        producers.spawn(workload::produce(
            workload::ProducerTask {
                index,
                kind,
                bootstrap: bootstrap.clone(),
                topic: topic.clone(),
                keys: args.keys,
                interval_ms,
                seed: args.seed,
                delivery_timeout: args.delivery_timeout,
            },
            history.clone(),
            stats.clone(),
            clock,
            stop_producers.clone(),
        ));
    }
    let nemesis = cluster.clone().map(|cluster| {
        tokio::spawn(
            Nemesis {
                kind: args.nemesis,
                cluster,
                seed: args.seed,
                gap: args.fault_gap,
                length: args.fault_length,
                events: events.clone(),
                clock,
                stop: stop_nemesis.clone(),
                grudge: grudge.clone(),
            }
            .run(),
        )
    });
    let progress = tokio::spawn(progress(
        clock,
        stats.clone(),
        events.clone(),
        stop_progress.clone(),
    ));

    tokio::time::sleep(args.duration).await;
    let faults_end_ms = clock.ms();
    println!(
        "[{:>6.1}s] the faults stop: healing, then the final read",
        faults_end_ms as f64 / 1000.0
    );
    stop_nemesis.store(true, Ordering::SeqCst);
    stop_producers.store(true, Ordering::SeqCst);
    if let Some(nemesis) = nemesis {
        nemesis
            .await
            .map_err(|e| format!("the nemesis task failed: {e}"))??;
    }
    let healed_ms = clock.ms();
    while let Some(result) = producers.join_next().await {
        result.map_err(|e| format!("a producer task failed: {e}"))??;
    }
    stop_readers.store(true, Ordering::SeqCst);
    while let Some(result) = readers.join_next().await {
        result.map_err(|e| format!("a reader task failed: {e}"))??;
    }
    let final_read_start_ms = clock.ms();
    println!(
        "[{:>6.1}s] every send resolved ({}); the final read starts",
        final_read_start_ms as f64 / 1000.0,
        stats.line()
    );
    workload::final_read(
        &bootstrap,
        &topic,
        args.partitions,
        history.clone(),
        clock,
        args.final_read_timeout,
    )
    .await?;
    let mut member_crashes = 0;
    if let Some(group) = group {
        let finished = history.lock().expect("not poisoned").finished;
        // Without a finished final read there is nothing to hold the group to.
        let caught_up =
            finished && workload::wait_for_group(&history, args.final_read_timeout).await;
        stop_group.store(true, Ordering::SeqCst);
        member_crashes = group
            .await
            .map_err(|e| format!("the consumer group task failed: {e}"))??;
        history.lock().expect("not poisoned").group.finished = caught_up;
    }
    let end_ms = clock.ms();
    stop_progress.store(true, Ordering::SeqCst);
    let _ = progress.await;

    let history = std::mem::take(&mut *history.lock().expect("not poisoned"));
    let verdict = oxbow_jepsen::checker::check(&history);
    let events = events.lock().expect("not poisoned").clone();
    let phases = Phases {
        started_ms,
        faults_end_ms,
        healed_ms,
        final_read_start_ms,
        end_ms,
    };
    let run = report::Run {
        args: &args,
        target: &target,
        topic: &topic,
        phases,
        events: &events,
        member_crashes,
    };
    let summary = write_outputs(&out, &history, &verdict, &run)?;
    println!();
    print!("{summary}");
    println!("history, report, summary and timeline in {}", out.display());
    Ok(verdict.is_valid())
}

/// Writes history.jsonl, report.json, summary.txt and timeline.svg into `out`; returns the
/// summary, which is printed too.
fn write_outputs(
    out: &Path,
    history: &History,
    verdict: &oxbow_jepsen::checker::Verdict,
    run: &report::Run<'_>,
) -> Result<String, String> {
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let mut jsonl = Vec::new();
    crate::history_file::write(history, run.events, &mut jsonl)
        .map_err(|e| format!("cannot encode the history: {e}"))?;
    write("history.jsonl", &jsonl)?;
    let report = serde_json::to_vec_pretty(&report::json(history, verdict, run))
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    write("report.json", &report)?;
    let summary = report::summary(history, verdict, run);
    write("summary.txt", summary.as_bytes())?;
    write(
        "timeline.svg",
        crate::svg::timeline(history, verdict, run).as_bytes(),
    )?;
    Ok(summary)
}

/// A line every 5 s: elapsed time, operations, current faults.
async fn progress(clock: Clock, stats: Arc<Stats>, events: Events, stop: Arc<AtomicBool>) {
    let mut next = 5_000;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if clock.ms() >= next {
            next += 5_000;
            println!(
                "[{:>6.1}s] {} | faults: {}",
                clock.ms() as f64 / 1000.0,
                stats.line(),
                nemesis::current(&events)
            );
        }
    }
}
