# Shared by the serve benchmarks (sourced): a free loopback port, and stopping the server started
# in the background whose pid is in SERVER_PID (SIGTERM, up to 15 s to finish, then SIGKILL),
# also when the script exits. Needs $PY (a python3).
SERVER_PID=""
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT
