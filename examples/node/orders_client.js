// A Node.js client of the order service, built from ../../protos at run time (no code generation).
//
// It creates an order, reads it back with min_position (read-your-writes), watches it through a
// confirm and a ship, and follows the event log with SubscribeEvents from position 0 to caught_up.
//
//   npm ci
//   node orders_client.js [--write 127.0.0.1:50051] [--read 127.0.0.1:50052]
//                         [--token TOKEN] [--ca ca.pem [--cert client.pem --key client.key]]
//
// The addresses may also come from ORDERS_WRITE_ADDR and ORDERS_READ_ADDR, the token from
// ORDERS_TOKEN. With --ca the channels use TLS (and mutual TLS with --cert and --key); with a token
// every call carries `authorization: Bearer TOKEN`.
"use strict";

const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.join(__dirname, "..", "..", "protos");
const DEADLINE_MS = 10000;

function option(name, fallback) {
  const index = process.argv.indexOf(name);
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

function loadApi() {
  const definition = protoLoader.loadSync(path.join(PROTOS, "orders", "v1", "orders.proto"), {
    includeDirs: [PROTOS],
    keepCase: true, // field names as in the .proto: order_id, min_position, ...
    longs: Number, // uint64 positions as numbers (exact up to 2^53)
    enums: String, // ORDER_STATUS_PENDING rather than 1
    defaults: true,
    oneofs: true, // a oneof's set field is named by the virtual field of the oneof's name
  });
  return grpc.loadPackageDefinition(definition).orders.v1;
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

// Channel credentials: plaintext, or TLS trusting --ca (with a client certificate for mutual TLS).
function channelCredentials() {
  const ca = option("--ca", process.env.ORDERS_CA);
  if (!ca) {
    return grpc.credentials.createInsecure();
  }
  const cert = option("--cert", process.env.ORDERS_CERT);
  const key = option("--key", process.env.ORDERS_KEY);
  return grpc.credentials.createSsl(
    fs.readFileSync(ca),
    key ? fs.readFileSync(key) : null,
    cert ? fs.readFileSync(cert) : null,
  );
}

// Metadata sent with every call: the bearer token, when there is one. Per call rather than as call
// credentials, because grpc-js refuses call credentials on a plaintext channel.
const TOKEN = option("--token", process.env.ORDERS_TOKEN);

function metadata() {
  const result = new grpc.Metadata();
  if (TOKEN) {
    result.set("authorization", `Bearer ${TOKEN}`);
  }
  return result;
}

// A unary call as a promise.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), { deadline: deadline() }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

// Watch the order: confirm it once the first view arrives, ship it once it is confirmed, and stop
// once it is shipped. Resolves with the statuses and versions seen.
function watchThroughConfirmAndShip(commands, queries, orderId, minPosition) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const watch = queries.WatchOrder({ order_id: orderId, min_position: minPosition }, metadata());
    const timer = setTimeout(() => {
      watch.cancel();
      reject(new Error(`watch saw only ${JSON.stringify(seen)}`));
    }, DEADLINE_MS);
    watch.on("data", (message) => {
      const { status, version } = message.order;
      seen.push({ status, version, read_model_version: message.consistency.read_model_version });
      console.log(`watch: ${orderId} is ${status} at version ${version}`);
      let next = null;
      if (status === "ORDER_STATUS_PENDING") {
        next = call(commands, "ConfirmOrder", { order_id: orderId, expected_version: version });
      } else if (status === "ORDER_STATUS_CONFIRMED") {
        next = call(commands, "ShipOrder", { order_id: orderId, tracking_number: "TRACK-NODE-1" });
      } else if (status === "ORDER_STATUS_SHIPPED") {
        clearTimeout(timer);
        watch.cancel();
        resolve(seen);
      }
      if (next) {
        next.catch((error) => {
          clearTimeout(timer);
          watch.cancel();
          reject(error);
        });
      }
    });
    watch.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) {
        clearTimeout(timer);
        reject(error);
      }
    });
  });
}

// Follow the log from position 0 until the server says caught_up; resolves with what was seen.
function subscribeUntilCaughtUp(events) {
  return new Promise((resolve, reject) => {
    let count = 0;
    let last = 0;
    const subscription = events.SubscribeEvents({ from_position: 0 }, metadata());
    const timer = setTimeout(() => {
      subscription.cancel();
      reject(new Error(`no caught_up after ${count} events`));
    }, DEADLINE_MS);
    subscription.on("data", (message) => {
      if (message.message === "event") {
        if (message.event.position !== last + 1) {
          reject(new Error(`event ${message.event.position} after ${last}`));
        }
        last = message.event.position;
        count += 1;
      } else if (message.message === "caught_up") {
        clearTimeout(timer);
        subscription.cancel();
        resolve({ count, position: message.caught_up.position });
      }
    });
    subscription.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) {
        clearTimeout(timer);
        reject(error);
      }
    });
  });
}

async function main() {
  const api = loadApi();
  const writeAddress = option("--write", process.env.ORDERS_WRITE_ADDR || "127.0.0.1:50051");
  const readAddress = option("--read", process.env.ORDERS_READ_ADDR || "127.0.0.1:50052");
  const credentials = channelCredentials();
  const commands = new api.OrderCommandService(writeAddress, credentials);
  const queries = new api.OrderQueryService(readAddress, credentials);
  const events = new api.EventStoreService(readAddress, credentials);

  const orderId = `node-${crypto.randomUUID().slice(0, 8)}`;
  const created = await call(commands, "CreateOrder", {
    order_id: orderId,
    customer_id: "node-customer",
    items: [
      { product_id: "sku-1", quantity: 2, unit_price: 1250 },
      { product_id: "sku-2", quantity: 1, unit_price: 499 },
    ],
    command_id: `create-${orderId}`,
  });
  console.log(`created ${orderId} at position ${created.position} (version ${created.stream_version})`);

  const read = await call(queries, "GetOrder", { order_id: orderId, min_position: created.position });
  console.log(
    `read ${orderId}: ${read.order.status}, total ${read.order.total},` +
      ` read model at ${read.consistency.read_model_version}, consistent ${read.consistency.is_consistent}`,
  );

  const seen = await watchThroughConfirmAndShip(commands, queries, orderId, created.position);
  console.log(`watch saw ${seen.map((s) => `${s.status}@${s.version}`).join(" -> ")}`);

  const followed = await subscribeUntilCaughtUp(events);
  console.log(`subscription: ${followed.count} events from position 0, caught up at ${followed.position}`);

  for (const client of [commands, queries, events]) {
    client.close();
  }
}

main().catch((error) => {
  console.error(`orders_client failed: ${error.message || error}`);
  process.exit(1);
});
