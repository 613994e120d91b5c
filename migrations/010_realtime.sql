-- Push through Supabase Realtime (issue 16): devices on the Supabase backend have no direct
-- connection for LISTEN, and authenticate with an opaque device token rather than a JWT, so
-- Realtime's private channels (row-level security on the caller's JWT) do not fit. Instead:
--
--  - Each project has a Realtime topic that is a capability: 'vidsync:' and 32 hex digits, drawn
--    at random when the project is created (existing projects get theirs here). Only the
--    token-authenticated device_sync returns it, to an active device of that project; the
--    table that holds it is the service role's alone (as in 007).
--  - When a project's version goes up, the same transaction calls Supabase's "Broadcast from
--    Database" function, realtime.send(payload jsonb, event text, topic text, private boolean)
--    (supabase/realtime, lib/realtime/tenants/repo/migrations/20260211000000_squash_migrations.ex),
--    with the new version as the only payload, event 'version', on the project's topic, as a
--    public-channel message (private = false). realtime.send inserts into realtime.messages,
--    which Realtime broadcasts from the replication stream, so it goes out at commit; it turns
--    its own failures into warnings, and so does the trigger with a failure to call it: a
--    broadcast never fails the change.
--  - Where there is no realtime.send (PGlite, plain Postgres, Supabase without Realtime) nothing
--    is sent: the function is looked up when a version goes up, not when this migration runs.
--  - What a device learns from the topic: its project's version numbers, which device_sync
--    answers anyway. Someone without the topic (another project's device, a guess) hears nothing.

-- A new random topic: gen_random_uuid() has 122 random bits; two of them make 244, cut to 128.
CREATE FUNCTION vidsync.new_realtime_topic() RETURNS text LANGUAGE sql VOLATILE SET search_path = '' AS $$
  SELECT 'vidsync:' || left(replace(pg_catalog.gen_random_uuid()::text, '-', '') || replace(pg_catalog.gen_random_uuid()::text, '-', ''), 32)
$$;

-- Existing projects get a topic each (a volatile default is evaluated per row).
ALTER TABLE vidsync.project_versions ADD COLUMN topic text NOT NULL DEFAULT vidsync.new_realtime_topic();
ALTER TABLE vidsync.project_versions ADD CONSTRAINT project_versions_topic_key UNIQUE (topic);

-- Broadcasts a project's new version on its topic, through realtime.send when there is one.
-- Not SECURITY DEFINER: only the functions' owner (device functions, direct connections) and
-- service_role (operators through the API) change the tables, and on Supabase both may insert
-- into realtime.messages (granted, and exempt from its row-level security).
CREATE FUNCTION vidsync.broadcast_version() RETURNS trigger LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  -- No realtime schema (PGlite, plain Postgres): nothing to do, and no subtransaction for it.
  IF pg_catalog.to_regnamespace('realtime') IS NULL THEN
    RETURN NULL;
  END IF;
  -- Like realtime.send's own failures, one to find or call it (a role without the grant) is a
  -- warning: devices then learn the change from their slow poll, and the change is made.
  BEGIN
    IF pg_catalog.to_regprocedure('realtime.send(jsonb, text, text, boolean)') IS NOT NULL THEN
      EXECUTE 'SELECT realtime.send($1, $2, $3, $4)' USING pg_catalog.jsonb_build_object('version', NEW.version), 'version', NEW.topic, false;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'vidsync: project version % not broadcast through Realtime: %', NEW.version, SQLERRM;
  END;
  RETURN NULL;
END $$;
CREATE TRIGGER project_versions_broadcast AFTER UPDATE OF version ON vidsync.project_versions FOR EACH ROW
  WHEN (NEW.version > OLD.version) EXECUTE FUNCTION vidsync.broadcast_version();

-- device_sync as in 007; the full snapshot also names the project's Realtime topic.
CREATE OR REPLACE FUNCTION vidsync.device_sync(p_token text, p_known_version bigint DEFAULT NULL, p_syncthing_id text DEFAULT NULL)
RETURNS TABLE (state text, version bigint, body jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.join_requests := vidsync.join_request_by_token(p_token);
  v_project text := (SELECT p.name FROM vidsync.projects p WHERE p.id = v_request.project_id);
  v_device vidsync.devices := vidsync.device_heartbeat(v_request, p_syncthing_id, v_project);
  v_versions vidsync.project_versions;
  v_names text[];
  v_lighthouses boolean;
  v_blocked text[];
  v_unblocked text[];
  v_peers jsonb;
BEGIN
  IF v_device.status IS DISTINCT FROM 'active' THEN
    RETURN QUERY SELECT 'full'::text, NULL::bigint,
      jsonb_build_object('project', v_project, 'device', v_request.name, 'status', coalesce(v_device.status, 'released'));
    RETURN;
  END IF;
  PERFORM vidsync.expire_blocklist(v_device.project_id);
  SELECT * INTO v_versions FROM vidsync.project_versions v WHERE v.project_id = v_device.project_id;
  IF p_known_version = v_versions.version THEN
    RETURN QUERY SELECT 'unchanged'::text, v_versions.version, NULL::jsonb;
    RETURN;
  END IF;
  IF p_known_version IS NULL OR p_known_version < v_versions.oldest_delta OR p_known_version > v_versions.version THEN
    RETURN QUERY
    SELECT 'full'::text, v_versions.version,
           jsonb_build_object('project', v_project, 'device', v_device.name, 'status', v_device.status, 'ip', host(v_device.ip),
                              'cidr', n.cidr::text, 'channel', vidsync.project_channel(v_device.project_id), 'topic', v_versions.topic,
                              'lighthouses', n.lighthouses, 'blocklist', to_jsonb(n.blocklist),
                              'peers', vidsync.project_peers(v_device.project_id, v_device.id))
      FROM vidsync.project_network(v_project) n;
    RETURN;
  END IF;
  SELECT coalesce(array_agg(DISTINCT c.subject) FILTER (WHERE c.kind = 'peer'), '{}'),
         coalesce(bool_or(c.kind = 'lighthouse'), false),
         coalesce(array_agg(DISTINCT c.subject) FILTER (WHERE c.kind = 'block'), '{}'),
         coalesce(array_agg(DISTINCT c.subject) FILTER (WHERE c.kind = 'unblock'), '{}')
    INTO v_names, v_lighthouses, v_blocked, v_unblocked
    FROM vidsync.project_changes c
   WHERE c.project_id = v_device.project_id AND c.version > p_known_version;
  v_names := array_remove(v_names, v_device.name);
  v_peers := vidsync.project_peers(v_device.project_id, v_device.id, v_names);
  RETURN QUERY
  SELECT 'delta'::text, v_versions.version,
         jsonb_build_object(
           'status', v_device.status,
           'peers', v_peers,
           'removed', (SELECT to_jsonb(coalesce(array_agg(x.name ORDER BY x.name), '{}')) FROM unnest(v_names) x (name)
                        WHERE NOT v_peers @> jsonb_build_array(jsonb_build_object('name', x.name))),
           'blocklistAdded', to_jsonb(ARRAY(SELECT unnest(v_blocked) EXCEPT SELECT unnest(v_unblocked) ORDER BY 1)),
           'blocklistRemoved', to_jsonb(v_unblocked))
         || CASE WHEN v_lighthouses THEN (SELECT jsonb_build_object('lighthouses', n.lighthouses) FROM vidsync.project_network(v_project) n)
                 ELSE '{}'::jsonb END;
END $$;

-- Grants as in 007: the new functions are the service role's (device_sync keeps its grants).
REVOKE ALL ON FUNCTION vidsync.new_realtime_topic(), vidsync.broadcast_version() FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.new_realtime_topic(), vidsync.broadcast_version() TO service_role;
