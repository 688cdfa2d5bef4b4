// A real Neo4j Community server for the tests: the embedded database with its Bolt connector.
// Runs as a single-file source (`java -cp CLASSPATH Launcher.java DATA_DIR [PORT [PASSWORD]]`,
// the classpath from `mvn dependency:build-classpath` on pom.xml beside this file), or compiled;
// tests/neo4j_server.py compiles it once and caches the classpath and a class archive.
//
// Contract:
//  - data (databases, transaction logs, logs) lives under DATA_DIR;
//  - PORT 0 (the default) lets the kernel pick a free port;
//  - PASSWORD empty (the default) disables auth; otherwise user "neo4j" has that password;
//  - once the database answers a query and the Bolt port accepts TCP connections, one line
//    "anamnesis-neo4j ready bolt_port=N version=V" goes to stdout;
//  - it shuts down cleanly on SIGTERM/SIGINT and when its stdin closes, so a test process that
//    holds the other end of the pipe can never leave it behind, even when killed.

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import org.neo4j.configuration.Config;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.ConnectorPortRegister;
import org.neo4j.configuration.connectors.ConnectorType;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.graphdb.QueryExecutionException;
import org.neo4j.io.ByteUnit;
import org.neo4j.io.fs.DefaultFileSystemAbstraction;
import org.neo4j.kernel.impl.security.User;
import org.neo4j.kernel.internal.GraphDatabaseAPI;
import org.neo4j.logging.NullLogProvider;
import org.neo4j.memory.EmptyMemoryTracker;
import org.neo4j.server.security.SecureHasher;
import org.neo4j.server.security.SystemGraphCredential;
import org.neo4j.server.security.auth.CommunitySecurityModule;
import org.neo4j.server.security.auth.FileUserRepository;

public final class Launcher {
    private static final String HOST = "127.0.0.1";

    public static void main(String[] args) {
        try {
            run(args);
        } catch (Throwable failure) {
            // Neo4j's own threads would keep a JVM alive after main ends: exit explicitly.
            failure.printStackTrace();
            System.exit(1);
        }
    }

    private static void run(String[] args) throws Exception {
        if (args.length < 1 || args.length > 3) {
            System.err.println("usage: java -cp CLASSPATH Launcher.java DATA_DIR [PORT [PASSWORD]]");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = args.length > 1 ? Integer.parseInt(args[1]) : 0;
        String password = args.length > 2 ? args[2] : "";

        AtomicReference<DatabaseManagementService> started = new AtomicReference<>();
        AtomicBoolean stopped = new AtomicBoolean();
        // SIGTERM/SIGINT run the shutdown hooks; the end of stdin runs them through System.exit.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            DatabaseManagementService service = started.get();
            if (service != null && stopped.compareAndSet(false, true)) {
                System.err.println("anamnesis-neo4j: shutting down");
                service.shutdown();
                System.err.println("anamnesis-neo4j: stopped");
            }
        }, "neo4j-shutdown"));
        Thread watcher = new Thread(() -> {
            drain(System.in);
            System.err.println("anamnesis-neo4j: stdin closed");
            System.exit(0);
        }, "stdin-watcher");
        watcher.setDaemon(true);
        watcher.start();

        // A new store takes its first user from data/dbms/auth.ini, as `neo4j-admin dbms
        // set-initial-password` writes it: seconds cheaper than ALTER USER after the start.
        boolean newStore = !Files.exists(home.resolve("data/databases/system"));
        if (!password.isEmpty() && newStore) {
            writeInitialPassword(home, password);
        }

        DatabaseManagementService service = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress(HOST, port))
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(HttpConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, !password.isEmpty())
                // Sized for tests on a small, shared machine, not for throughput.
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(32))
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, ByteUnit.mebiBytes(1))
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "false")
                .setConfig(GraphDatabaseSettings.pagecache_warmup_enabled, false)
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                .setConfig(BoltConnector.thread_pool_max_size, 50)
                // Tests close their connections before the server stops: no need to linger.
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .setConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, Duration.ofMillis(100))
                .setConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, Duration.ofMillis(100))
                .build();
        started.set(service);

        GraphDatabaseService db = service.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
        if (!db.isAvailable(TimeUnit.MINUTES.toMillis(2))) {
            System.err.println("anamnesis-neo4j: database did not become available");
            System.exit(1);
        }
        if (!password.isEmpty() && !newStore) {
            try {
                service.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME).executeTransactionally(
                        "ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED",
                        Map.of("password", password));
            } catch (QueryExecutionException unchanged) {
                // Neo4j refuses to set the password a user already has: nothing to do then.
                if (!String.valueOf(unchanged.getMessage()).contains("cannot be the same")) {
                    throw unchanged;
                }
            }
        }
        String version = db.executeTransactionally(
                "CALL dbms.components() YIELD versions RETURN versions[0] AS version", Map.of(),
                result -> (String) result.next().get("version"));

        int boltPort = ((GraphDatabaseAPI) db).getDependencyResolver()
                .resolveDependency(ConnectorPortRegister.class)
                .getLocalAddress(ConnectorType.BOLT).getPort();
        awaitListening(boltPort, Duration.ofSeconds(30));

        System.out.println("anamnesis-neo4j ready bolt_port=" + boltPort + " version=" + version);
        System.out.flush();
        Thread.currentThread().join();  // until System.exit or a signal
    }

    private static void writeInitialPassword(Path home, String password) throws Exception {
        Config config = Config.newBuilder().set(GraphDatabaseSettings.neo4j_home, home).build();
        FileUserRepository users = new FileUserRepository(new DefaultFileSystemAbstraction(),
                CommunitySecurityModule.getInitialUserRepositoryFile(config),
                NullLogProvider.getInstance(), EmptyMemoryTracker.INSTANCE);
        users.start();
        try {
            users.create(new User("neo4j", null, SystemGraphCredential.createCredentialForPassword(
                    password.getBytes(StandardCharsets.UTF_8), new SecureHasher()), false, false));
        } finally {
            users.shutdown();
        }
    }

    private static void drain(InputStream in) {
        byte[] buffer = new byte[256];
        try {
            while (in.read(buffer) >= 0) {
                // input is ignored: only its end matters
            }
        } catch (IOException ignored) {
            // a broken pipe is an end too
        }
    }

    private static void awaitListening(int port, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            try (Socket socket = new Socket()) {
                socket.connect(new InetSocketAddress(HOST, port), 1000);
                return;
            } catch (IOException notYet) {
                if (System.nanoTime() > deadline) {
                    System.err.println("anamnesis-neo4j: Bolt port " + port + " never accepted");
                    System.exit(1);
                }
                Thread.sleep(50);
            }
        }
    }
}
