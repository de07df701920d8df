//! The `test` command: set up (a local cluster, or an existing one), create the topics, run
//! the workload (queue, groups or txn) with the nemesis for `--duration` while printing
//! progress, stop the faults and heal, let every operation resolve, read everything back,
//! check, and write the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxbow_jepsen::history::{Delivery, History};
use oxbow_jepsen::txn::Isolation;

use crate::cli::{NemesisKind, TestArgs, Workload};
use crate::cluster::{self as local, LocalCluster};
use crate::nemesis::{self, Events, Nemesis};
use crate::proxy::Grudge;
use crate::report::{self, Checked, Phases};
use crate::workload::txn::{self, Txn};
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

/// What every workload's run starts from: the command line, the cluster and its faults'
/// plumbing, the topic's name and the run's clock.
struct Setup {
    args: TestArgs,
    out: PathBuf,
    clock: Clock,
    cluster: Option<Arc<Mutex<LocalCluster>>>,
    grudge: Option<Grudge>,
    bootstrap: String,
    topic: String,
    target: String,
    events: Events,
    stop_nemesis: Arc<AtomicBool>,
}

impl Setup {
    /// Starts the nemesis on the local cluster (none on an existing one).
    fn start_nemesis(&self) -> Option<tokio::task::JoinHandle<Result<(), String>>> {
        self.cluster.clone().map(|cluster| {
            tokio::spawn(
                Nemesis {
                    kind: self.args.nemesis,
                    cluster,
                    seed: self.args.seed,
                    gap: self.args.fault_gap,
                    length: self.args.fault_length,
                    events: self.events.clone(),
                    clock: self.clock,
                    stop: self.stop_nemesis.clone(),
                    grudge: self.grudge.clone(),
                }
                .run(),
            )
        })
    }

    /// Stops the faults and waits until every node runs again.
    async fn heal(
        &self,
        nemesis: Option<tokio::task::JoinHandle<Result<(), String>>>,
    ) -> Result<(), String> {
        self.stop_nemesis.store(true, Ordering::SeqCst);
        if let Some(nemesis) = nemesis {
            nemesis
                .await
                .map_err(|e| format!("the nemesis task failed: {e}"))??;
        }
        Ok(())
    }

    /// The nemesis's events so far.
    fn events(&self) -> Vec<nemesis::Event> {
        self.events.lock().expect("not poisoned").clone()
    }

    /// `[  12.3s] `.
    fn stamp(&self) -> String {
        format!("[{:>6.1}s]", self.clock.ms() as f64 / 1000.0)
    }
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
            local::Setup {
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
        format!("jepsen-{}-{}-{now}", args.workload.name(), args.seed)
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
        "oxbow-jepsen test: workload {}, nemesis {}, seed {}, {:?} of faults; {target}; topic {topic}",
        args.workload.name(),
        args.nemesis.name(),
        args.seed,
        args.duration
    );
    let setup = Setup {
        args,
        out,
        clock,
        cluster,
        grudge,
        bootstrap,
        topic,
        target,
        events: Events::default(),
        stop_nemesis: Arc::new(AtomicBool::new(false)),
    };
    match setup.args.workload {
        Workload::Queue | Workload::Groups => queue(setup).await,
        Workload::Txn => txn(setup).await,
    }
}

/// The queue and groups workloads: producers, readers, the consumer group, the final read.
async fn queue(setup: Setup) -> Result<bool, String> {
    let Setup {
        ref args,
        ref bootstrap,
        ref topic,
        clock,
        ..
    } = setup;
    let client = workload::client(bootstrap)?;
    workload::create_topic(
        &client,
        topic,
        args.partitions,
        args.replication,
        Duration::from_secs(60),
    )
    .await?;
    let started_ms = clock.ms();
    println!(
        "{} topic {topic} ready ({} partitions, replication {}); the workload starts",
        setup.stamp(),
        args.partitions,
        args.replication
    );

    let history = Arc::new(Mutex::new(History::default()));
    let stats = Arc::new(Stats::default());
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let stop_progress = Arc::new(AtomicBool::new(false));

    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..args.readers() {
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
    let group = (args.group_members() > 0).then(|| {
        history.lock().expect("not poisoned").group.ran = true;
        tokio::spawn(workload::run_group(workload::Group {
            bootstrap: bootstrap.clone(),
            group: format!("{topic}-group"),
            topic: topic.clone(),
            members: args.group_members(),
            crash_every: args.member_crash_every(),
            seed: args.seed,
            history: history.clone(),
            clock,
            stop_crashes: setup.stop_nemesis.clone(),
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
    let nemesis = setup.start_nemesis();
    let line = {
        let stats = stats.clone();
        move || stats.line()
    };
    let progress = tokio::spawn(progress(
        clock,
        line,
        setup.events.clone(),
        stop_progress.clone(),
    ));

    tokio::time::sleep(args.duration).await;
    let faults_end_ms = clock.ms();
    println!(
        "{} the faults stop: healing, then the final read",
        setup.stamp()
    );
    stop_producers.store(true, Ordering::SeqCst);
    setup.heal(nemesis).await?;
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
        "{} every send resolved ({}); the final read starts",
        setup.stamp(),
        stats.line()
    );
    workload::final_read(
        bootstrap,
        topic,
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
    let events = setup.events();
    let phases = Phases {
        started_ms,
        faults_end_ms,
        healed_ms,
        final_read_start_ms,
        end_ms,
    };
    let run = report::Run {
        args,
        target: &setup.target,
        topic,
        phases,
        events: &events,
        member_crashes,
    };
    let mut jsonl = Vec::new();
    oxbow_jepsen::jsonl::write_history(&history, &mut jsonl)
        .map_err(|e| format!("cannot encode the history: {e}"))?;
    let checked = Checked::Queue {
        history: &history,
        verdict: &verdict,
    };
    write_outputs(&setup.out, &jsonl, &checked, &run)?;
    Ok(checked.valid())
}

/// The transactional workload: the seeder, the transformers, the output readers and the
/// offset watcher under faults; healing; the transformers catch up; the final read.
async fn txn(setup: Setup) -> Result<bool, String> {
    let Setup {
        ref args,
        ref bootstrap,
        ref topic,
        clock,
        ..
    } = setup;
    if args.transformers == 0 || args.copies == 0 {
        return Err("--transformers and --copies must be at least 1".into());
    }
    let txn = Arc::new(Txn::new(
        bootstrap,
        topic,
        args.partitions,
        args.copies,
        (args.abort_chance, args.fence_chance),
        args.rate,
        args.seed,
        (args.delivery_timeout, args.transaction_timeout),
        clock,
    ));
    let client = workload::client(bootstrap)?;
    for name in [&txn.input, &txn.output] {
        workload::create_topic(
            &client,
            name,
            args.partitions,
            args.replication,
            Duration::from_secs(60),
        )
        .await?;
    }
    let started_ms = clock.ms();
    println!(
        "{} topics {} and {} ready ({} partitions each, replication {}); {} transformers start",
        setup.stamp(),
        txn.input,
        txn.output,
        args.partitions,
        args.replication,
        args.transformers
    );
    let stop_progress = Arc::new(AtomicBool::new(false));
    let seeder = tokio::spawn(txn::seed_inputs(txn.clone()));
    let mut transformers = tokio::task::JoinSet::new();
    for index in 0..args.transformers {
        transformers.spawn(txn::transform(txn.clone(), index));
    }
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..args.readers() {
        let isolation = if reader % 2 == 0 {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        };
        readers.spawn(txn::read_output(txn.clone(), reader, isolation));
    }
    readers.spawn(txn::watch_offsets(txn.clone()));
    let nemesis = setup.start_nemesis();
    let line = {
        let txn = txn.clone();
        move || txn.stats.line()
    };
    let progress = tokio::spawn(progress(
        clock,
        line,
        setup.events.clone(),
        stop_progress.clone(),
    ));

    tokio::time::sleep(args.duration).await;
    let faults_end_ms = clock.ms();
    println!(
        "{} the faults and the inputs stop: healing, then the transformers catch up",
        setup.stamp()
    );
    txn.stop_faults.store(true, Ordering::SeqCst);
    txn.stop_inputs.store(true, Ordering::SeqCst);
    setup.heal(nemesis).await?;
    let healed_ms = clock.ms();
    seeder
        .await
        .map_err(|e| format!("the input producer failed: {e}"))??;
    let caught_up = txn::wait_caught_up(&txn, args.final_read_timeout).await?;
    txn.stop_transformers.store(true, Ordering::SeqCst);
    while let Some(result) = transformers.join_next().await {
        result.map_err(|e| format!("a transformer failed: {e}"))??;
    }
    txn.stop_readers.store(true, Ordering::SeqCst);
    while let Some(result) = readers.join_next().await {
        result.map_err(|e| format!("an output reader failed: {e}"))??;
    }
    let final_read_start_ms = clock.ms();
    println!(
        "{} the transformers {} ({}); the final read starts",
        setup.stamp(),
        if caught_up {
            "caught up with every input"
        } else {
            "did NOT catch up"
        },
        txn.stats.line()
    );
    txn::final_read(&txn, args.final_read_timeout).await?;
    let end_ms = clock.ms();
    stop_progress.store(true, Ordering::SeqCst);
    let _ = progress.await;

    let history = std::mem::take(&mut *txn.history.lock().expect("not poisoned"));
    let verdict = oxbow_jepsen::txn::check(&history);
    let events = setup.events();
    let run = report::Run {
        args,
        target: &setup.target,
        topic,
        phases: Phases {
            started_ms,
            faults_end_ms,
            healed_ms,
            final_read_start_ms,
            end_ms,
        },
        events: &events,
        member_crashes: 0,
    };
    let mut jsonl = Vec::new();
    oxbow_jepsen::jsonl::write_txn_history(&history, &mut jsonl)
        .map_err(|e| format!("cannot encode the history: {e}"))?;
    let checked = Checked::Txn {
        history: &history,
        verdict: &verdict,
        stats: &txn.stats,
        caught_up,
    };
    write_outputs(&setup.out, &jsonl, &checked, &run)?;
    Ok(checked.valid() && checked.live())
}

/// Writes history.jsonl (`jsonl`, the encoded history, with the faults woven in),
/// report.json, summary.txt and timeline.svg into `out`; prints the summary.
fn write_outputs(
    out: &Path,
    jsonl: &[u8],
    checked: &Checked<'_>,
    run: &report::Run<'_>,
) -> Result<(), String> {
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let mut woven = Vec::new();
    crate::history_file::weave(jsonl, run.events, &mut woven)
        .map_err(|e| format!("cannot encode the history: {e}"))?;
    write("history.jsonl", &woven)?;
    let report = serde_json::to_vec_pretty(&report::json(checked, run))
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    write("report.json", &report)?;
    let summary = report::summary(checked, run);
    write("summary.txt", summary.as_bytes())?;
    write(
        "timeline.svg",
        crate::svg::timeline(checked, run).as_bytes(),
    )?;
    println!();
    print!("{summary}");
    println!("history, report, summary and timeline in {}", out.display());
    Ok(())
}

/// A line every 5 s: elapsed time, what `line` says of the operations, current faults.
async fn progress(clock: Clock, line: impl Fn() -> String, events: Events, stop: Arc<AtomicBool>) {
    let mut next = 5_000;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if clock.ms() >= next {
            next += 5_000;
            println!(
                "[{:>6.1}s] {} | faults: {}",
                clock.ms() as f64 / 1000.0,
                line(),
                nemesis::current(&events)
            );
        }
    }
}
