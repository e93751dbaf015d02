// graphile-worker's half of benches/etl_vs_graphile.sh (run it through that script, which
// installs graphile-worker and sets NODE_PATH). One measurement per invocation, printed
// as one `RESULT key=value …` line, in the same shapes as `benches/etl.rs --shape`:
//
//   node etl_vs_graphile.js queued N   N jobs queued first (one SQL statement, as in
//                                      graphile-worker's perfTest), then drained by one
//                                      runner with concurrency 8; times run() to the
//                                      N-th job:success
//   node etl_vs_graphile.js stream N   one runner with concurrency 8; N addJob calls
//                                      through WorkerUtils (their own pool, as an API
//                                      server would add them), 32 in flight; times the
//                                      first call to the N-th job:success
//
// Each invocation uses a fresh schema of PULSE_TEST_DATABASE_URL and drops it afterwards.
"use strict";

const { EventEmitter } = require("events");
const { run, runMigrations, makeWorkerUtils, Logger } = require("graphile-worker");
const { Pool } = require("pg");

const WORKERS = 8;
const IN_FLIGHT = 32;

async function main() {
  const [shape, runsArg] = process.argv.slice(2);
  const runs = Number(runsArg || 3000);
  const connectionString = process.env.PULSE_TEST_DATABASE_URL;
  if (!connectionString) throw new Error("set PULSE_TEST_DATABASE_URL");
  if (shape !== "queued" && shape !== "stream") throw new Error(`unknown shape ${shape}`);
  const schema = `gw_bench_${process.pid}_${Date.now()}`;
  const logger = new Logger(() => () => {});
  const pool = new Pool({ connectionString, max: 2 });
  const events = new EventEmitter();
  let succeeded = 0;
  let failed = 0;
  let resolveDone;
  const done = new Promise((resolve) => (resolveDone = resolve));
  events.on("job:success", () => {
    succeeded += 1;
    if (succeeded === runs) resolveDone();
  });
  events.on("job:error", () => (failed += 1));
  const options = {
    connectionString,
    schema,
    concurrency: WORKERS,
    noHandleSignals: true,
    pollInterval: 1000,
    logger,
    events,
    taskList: { noop: async () => {} },
  };
  try {
    await runMigrations({ connectionString, schema, logger });
    let started;
    let runner;
    if (shape === "queued") {
      await pool.query(
        `SELECT "${schema}".add_job('noop', '{}'::json) FROM generate_series(1, $1)`,
        [runs],
      );
      started = process.hrtime.bigint();
      runner = await run(options);
    } else {
      runner = await run(options);
      const utils = await makeWorkerUtils({ connectionString, schema, logger });
      started = process.hrtime.bigint();
      let next = 0;
      const adders = [];
      for (let i = 0; i < IN_FLIGHT; i++) {
        adders.push(
          (async () => {
            while (next < runs) {
              next += 1;
              await utils.addJob("noop", {});
            }
          })(),
        );
      }
      await Promise.all(adders);
      await utils.release();
    }
    await done;
    const secs = Number(process.hrtime.bigint() - started) / 1e9;
    await runner.stop();
    if (failed > 0) throw new Error(`${failed} no-op jobs failed`);
    const version = require("graphile-worker/package.json").version;
    console.log(
      `RESULT engine=graphile-worker-${version} shape=${shape} runs=${runs} ` +
        `secs=${secs.toFixed(3)} per_sec=${(runs / secs).toFixed(0)}`,
    );
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
