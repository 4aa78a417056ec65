/* main.c — dynd's entry point: hands the API's route table (api/routes.c) to the server's
 * matcher, then runs the daemon (server/daemon.c). The one place that knows both: every other
 * dependency runs api -> server -> engine. */
#include "api/api.h"
#include "server/router.h"
#include "server/server.h"
#include "base.h"

int main(int argc, char **argv) {
    dyn_threads_policy_init(argv); /* engine threads sleep, not spin, while they wait */
    int n;
    const srv_route *routes = api_routes(&n);
    srv_router_set(routes, n);
    return srv_daemon_main(argc, argv);
}
