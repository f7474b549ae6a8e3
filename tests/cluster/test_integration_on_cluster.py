"""The integration tests that matter, run again on a 3-master Redis Cluster: the same test
functions, with ``redis_url`` (tests/cluster/conftest.py) pointing at the cluster.
Single-node Redis runs them in tests/integration."""

from __future__ import annotations

import pytest

from tests.integration.test_admin import (  # noqa: F401
    config_dir,
    test_peek_dlq_shows_the_newest_first_with_reasons,
    test_peek_shows_lanes_in_claim_order_decoded,
    test_purge_by_reason_and_age_keeps_the_rest_in_order,
    test_requeue_resets_counters_and_the_job_completes,
    test_stats_figures_match_what_was_enqueued,
)
from tests.integration.test_deploy import (  # noqa: F401
    client,
    fleet,
    redis,
    test_deploy_while_long_jobs_run_loses_and_duplicates_nothing,
    test_invoke_validates_against_the_active_deployment,
    test_two_runtimes_switch_within_two_seconds,
)
from tests.integration.test_enqueue_many import (  # noqa: F401
    test_a_call_repeated_with_the_same_ids_or_keys_creates_nothing_twice,
    test_one_bad_payload_fails_alone,
)
from tests.integration.test_handoff import (  # noqa: F401
    test_a_drain_unparks_its_workers_and_waits_for_the_fence,
    test_a_lost_handoff_message_is_adopted_by_the_next_heartbeat,
    test_an_idle_worker_gets_a_new_job_by_handoff,
)
from tests.integration.test_jobs import (  # noqa: F401
    test_delayed_job_runs_after_its_delay,
    test_enqueue_then_complete,
    test_expired_lease_is_reclaimed_and_run_again,
    test_idempotency_key_and_job_id_make_one_job,
    test_retries_exhausted_go_to_dlq_with_reason,
    test_retry_then_succeed,
    test_stale_acknowledgement_is_fenced,
    test_strict_priority_order,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
