-- Hardening after an audit of the control plane (issue 15, server side):
--  - the client address used for rate limiting is taken only from a header the operator names as
--    set by the deployment's proxy (vidsync.settings), never from one any client can send;
--  - a request's source is an address or nothing, so it can be printed safely;
--  - device_refresh refuses a Syncthing ID another live device of the project holds, audits
--    changes, and the audit log's actor is the database role that acted (not a JWT claim);
--  - redeem_invite counts a refused name or key as a failed attempt and answers it instead of
--    raising, so the attempt is committed with the answer;
--  - a registration that loses a race for a name gets the conflict message, not Postgres's;
--  - Supabase's linter (splinter) finds nothing: every function has a fixed, empty search_path,
--    every foreign key an index, every table a primary key (test/sql-lint.test.ts checks it).

-- Settings only the operator changes (service_role or the migrating role): never the API's anon.
CREATE TABLE vidsync.settings (
  name text PRIMARY KEY CHECK (name IN ('trusted_proxy_header')),
  value text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The audit log's actor: the role that acted. PostgREST switches to the API role with
-- set_config('role', ...), which Postgres only allows to a member of that role, so unlike the
-- JWT's claims (which any caller of a direct connection can set) it cannot be forged.
ALTER TABLE vidsync.audit_log ALTER COLUMN actor
  SET DEFAULT CASE WHEN current_setting('role') = 'none' THEN session_user::text ELSE current_setting('role') END;

---------------------------------------------------------------------------------------------
-- Sources: an IP address, 'local' (a Unix socket or the embedded database), or NULL (unknown).
UPDATE vidsync.join_requests r SET source = NULL
 WHERE r.source IS NOT NULL AND r.source <> 'local' AND (length(r.source) > 39 OR r.source !~ '^[0-9A-Fa-f:.]+$');
ALTER TABLE vidsync.join_requests ADD CONSTRAINT join_requests_source_address
  CHECK (source IS NULL OR source = 'local' OR (length(source) <= 39 AND source ~ '^[0-9A-Fa-f:.]+$'));
ALTER TABLE vidsync.redeem_attempts ALTER COLUMN source DROP NOT NULL;
DELETE FROM vidsync.redeem_attempts a
 WHERE a.source <> 'local' AND (length(a.source) > 39 OR a.source !~ '^[0-9A-Fa-f:.]+$');
ALTER TABLE vidsync.redeem_attempts ADD CONSTRAINT redeem_attempts_source_address
  CHECK (source IS NULL OR source = 'local' OR (length(source) <= 39 AND source ~ '^[0-9A-Fa-f:.]+$'));

-- Names the HTTP header that the deployment's proxy sets to the client's address and that
-- clients cannot set themselves (Supabase: cf-connecting-ip). NULL: trust no header.
CREATE FUNCTION vidsync.set_trusted_proxy_header(p_header text) RETURNS TABLE (trusted_proxy_header text)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
BEGIN
  IF p_header IS NOT NULL AND p_header !~ '^[a-z0-9][a-z0-9-]{0,63}$' THEN
    RAISE EXCEPTION 'invalid header name "%": use the lowercase name of the header your proxy sets, such as cf-connecting-ip', left(p_header, 64)
      USING ERRCODE = 'VS400';
  END IF;
  IF p_header IS NULL THEN
    DELETE FROM vidsync.settings s WHERE s.name = 'trusted_proxy_header';
  ELSE
    INSERT INTO vidsync.settings (name, value) VALUES ('trusted_proxy_header', p_header)
    ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now();
  END IF;
  PERFORM vidsync.audit('settings.trusted_proxy_header', NULL, NULL, NULL, jsonb_build_object('header', p_header));
  RETURN QUERY SELECT p_header;
END $$;

-- Who is redeeming, for rate limiting. A direct connection: its address ('local' without one).
-- A call through an HTTP API (PostgREST sets request.headers): the address in the header the
-- operator trusts (the last entry of a list, which the trusted proxy appended), else unknown.
CREATE OR REPLACE FUNCTION vidsync.request_source() RETURNS text LANGUAGE plpgsql STABLE SET search_path = '' AS $$
DECLARE
  v_headers text := nullif(current_setting('request.headers', true), '');
  v_header text;
  v_value text;
BEGIN
  IF v_headers IS NULL THEN
    RETURN coalesce(host(inet_client_addr()), 'local');
  END IF;
  SELECT s.value INTO v_header FROM vidsync.settings s WHERE s.name = 'trusted_proxy_header';
  v_value := btrim(split_part(v_headers::jsonb ->> v_header, ',', -1));
  IF v_value IS NULL OR length(v_value) > 45 OR v_value !~ '^[0-9A-Fa-f:.]+$' THEN
    RETURN NULL;
  END IF;
  RETURN host(v_value::inet);
EXCEPTION WHEN invalid_text_representation THEN
  RETURN NULL;
END $$;

---------------------------------------------------------------------------------------------
-- Syncthing IDs: one live device per ID in a project. Earlier duplicates keep the first claim.
WITH duplicates AS (
  SELECT d.id, d.project_id, d.name, d.ip, d.syncthing_id FROM vidsync.devices d
   WHERE d.status = 'active' AND d.syncthing_id IS NOT NULL
     AND EXISTS (SELECT 1 FROM vidsync.devices e WHERE e.project_id = d.project_id AND e.syncthing_id = d.syncthing_id
                    AND e.status = 'active' AND e.id < d.id)
), cleared AS (
  UPDATE vidsync.devices d SET syncthing_id = NULL FROM duplicates x WHERE d.id = x.id RETURNING x.*
)
INSERT INTO vidsync.audit_log (action, project_id, device_id, ip, detail)
SELECT 'device.syncthing_id', c.project_id, c.id, c.ip, jsonb_build_object('device', c.name, 'old', c.syncthing_id, 'new', NULL, 'reason', 'duplicate')
  FROM cleared c;
CREATE UNIQUE INDEX devices_live_syncthing_id ON vidsync.devices (project_id, syncthing_id)
  WHERE status = 'active' AND syncthing_id IS NOT NULL;

-- The conflict message for a unique index of devices that a concurrent write hit first.
CREATE FUNCTION vidsync.device_conflict(p_constraint text, p_project text, p_device text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT CASE p_constraint
    WHEN 'devices_live_name' THEN format('device "%s" already exists in project "%s": choose another name', p_device, p_project)
    WHEN 'devices_live_public_key' THEN format('this public key is already registered in project "%s" (a cloned machine?): make a new key with `vidsync key create`', p_project)
    WHEN 'devices_live_syncthing_id' THEN format('this Syncthing ID is already used by another device of project "%s"', p_project)
    ELSE format('a concurrent change conflicts with device "%s" of project "%s": retry', p_device, p_project)
  END;
$$;

---------------------------------------------------------------------------------------------
-- allocate_ip and register_device as in 001/002, answering a lost race for a name, key or
-- Syncthing ID with the conflict message (ON CONFLICT waits for the concurrent insert; no
-- subtransaction on the allocation path).
CREATE OR REPLACE FUNCTION vidsync.allocate_ip(p_project text, p_device text)
RETURNS TABLE (device_id bigint, device text, ip inet)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_ip inet;
  v_device_id bigint;
  v_net cidr;
  v_deadline timestamptz := clock_timestamp() + interval '10 seconds';
BEGIN
  PERFORM vidsync.check_name('device', p_device);
  IF EXISTS (SELECT 1 FROM vidsync.devices d WHERE d.project_id = v_id AND d.name = p_device AND d.status <> 'released') THEN
    RAISE EXCEPTION '%', vidsync.device_conflict('devices_live_name', p_project, p_device) USING ERRCODE = 'VS409';
  END IF;
  LOOP
    SELECT i.ip INTO v_ip FROM vidsync.ip_pool i
     WHERE i.project_id = v_id AND i.device_id IS NULL AND (i.quarantined_until IS NULL OR i.quarantined_until <= now())
     ORDER BY i.ip LIMIT 1 FOR UPDATE SKIP LOCKED;
    EXIT WHEN v_ip IS NOT NULL;
    EXIT WHEN NOT EXISTS (SELECT 1 FROM vidsync.ip_pool i
     WHERE i.project_id = v_id AND i.device_id IS NULL AND (i.quarantined_until IS NULL OR i.quarantined_until <= now()));
    IF clock_timestamp() > v_deadline THEN
      RAISE EXCEPTION 'the pool of project "%" is busy: its last free addresses are held by registrations in progress; retry in a moment', p_project
        USING ERRCODE = 'VS503';
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  IF v_ip IS NULL THEN
    SELECT p.cidr INTO v_net FROM vidsync.projects p WHERE p.id = v_id;
    IF NOT EXISTS (SELECT 1 FROM vidsync.ip_pool i WHERE i.project_id = v_id) THEN
      RAISE EXCEPTION 'the pool of project "%" (%) is empty: run `vidsync pool populate %`', p_project, v_net, p_project
        USING ERRCODE = 'VS507';
    END IF;
    RAISE EXCEPTION 'the pool of project "%" (%) is exhausted: % addresses allocated, % quarantined; release devices or populate more of the range',
      p_project, v_net,
      (SELECT count(*) FROM vidsync.ip_pool i WHERE i.project_id = v_id AND i.device_id IS NOT NULL),
      (SELECT count(*) FROM vidsync.ip_pool i WHERE i.project_id = v_id AND i.device_id IS NULL AND i.quarantined_until > now())
      USING ERRCODE = 'VS507';
  END IF;
  -- A concurrent registration of the same name that committed first: the check above missed it.
  INSERT INTO vidsync.devices (project_id, name, ip) VALUES (v_id, p_device, v_ip)
  ON CONFLICT (project_id, name) WHERE status <> 'released' DO NOTHING
  RETURNING id INTO v_device_id;
  IF v_device_id IS NULL THEN
    RAISE EXCEPTION '%', vidsync.device_conflict('devices_live_name', p_project, p_device) USING ERRCODE = 'VS409';
  END IF;
  UPDATE vidsync.ip_pool i SET device_id = v_device_id, quarantined_until = NULL WHERE i.project_id = v_id AND i.ip = v_ip;
  PERFORM vidsync.audit('ip.allocate', v_id, v_device_id, v_ip, jsonb_build_object('device', p_device));
  RETURN QUERY SELECT v_device_id, p_device, v_ip;
END $$;

CREATE OR REPLACE FUNCTION vidsync.register_device(
  p_project text, p_device text, p_public_key text, p_public_key_sha256 text,
  p_groups text[] DEFAULT '{}', p_syncthing_id text DEFAULT NULL,
  p_lighthouse boolean DEFAULT false, p_endpoint text DEFAULT NULL, p_relay boolean DEFAULT false,
  p_operator_key boolean DEFAULT false)
RETURNS TABLE (device_id bigint, device text, ip inet, prefix_length integer)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_other text;
  v_allocation record;
  v_constraint text;
BEGIN
  IF p_public_key_sha256 IS NULL OR p_public_key_sha256 !~ '^[0-9a-f]{64}$' THEN
    RAISE EXCEPTION 'public key digest must be 64 hex digits' USING ERRCODE = 'VS400';
  END IF;
  PERFORM vidsync.check_groups(p_groups);
  IF p_syncthing_id IS NOT NULL AND upper(p_syncthing_id) !~ '^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$' THEN
    RAISE EXCEPTION 'invalid Syncthing device ID "%": expected eight groups of seven characters, as `syncthing --device-id` prints', left(p_syncthing_id, 80)
      USING ERRCODE = 'VS400';
  END IF;
  SELECT d.name INTO v_other FROM vidsync.devices d
   WHERE d.project_id = v_id AND d.public_key_sha256 = p_public_key_sha256 AND d.status <> 'released';
  IF FOUND THEN
    RAISE EXCEPTION 'this public key is already registered as device "%" in project "%" (a cloned machine?): make a new key with `vidsync key create`', v_other, p_project
      USING ERRCODE = 'VS409';
  END IF;
  SELECT d.name INTO v_other FROM vidsync.devices d
   WHERE d.project_id = v_id AND d.syncthing_id = upper(p_syncthing_id) AND d.status = 'active';
  IF FOUND THEN
    RAISE EXCEPTION 'this Syncthing ID is already used by device "%" of project "%"', v_other, p_project USING ERRCODE = 'VS409';
  END IF;
  SELECT * INTO v_allocation FROM vidsync.allocate_ip(p_project, p_device);
  BEGIN
    UPDATE vidsync.devices d
       SET public_key = p_public_key, public_key_sha256 = p_public_key_sha256, groups = coalesce(p_groups, '{}'),
           syncthing_id = upper(p_syncthing_id), lighthouse = p_lighthouse, endpoint = p_endpoint, relay = p_relay,
           operator_key = p_operator_key
     WHERE d.id = v_allocation.device_id;
  EXCEPTION WHEN unique_violation THEN
    GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
    RAISE EXCEPTION '%', vidsync.device_conflict(v_constraint, p_project, p_device) USING ERRCODE = 'VS409';
  END;
  PERFORM vidsync.audit(CASE WHEN p_lighthouse THEN 'lighthouse.register' ELSE 'device.register' END, v_id, v_allocation.device_id,
    v_allocation.ip, jsonb_build_object('device', p_device, 'groups', p_groups, 'operator_key', p_operator_key));
  RETURN QUERY SELECT v_allocation.device_id, p_device, v_allocation.ip,
    (SELECT masklen(p.cidr) FROM vidsync.projects p WHERE p.id = v_id);
END $$;

---------------------------------------------------------------------------------------------
-- redeem_invite as in 003, with these changes: the source is the trusted one (or unknown, when
-- no per-source limit applies); the per-invite limit applies whatever the source; a name or key
-- already taken is answered as a refusal and counted as a failed attempt, like a bad code.
--
-- Refusals are answered, not raised, so that the attempt row commits with the answer: through
-- Supabase's API the call is one transaction that PostgREST commits. A caller with a direct
-- database connection controls its transaction and can roll an attempt back; Postgres has no
-- write that survives the caller's rollback short of an autonomous transaction (dblink,
-- pg_background), which neither PGlite nor every Supabase project offers. Such a caller holds
-- database credentials, so the limits are for the API.
CREATE OR REPLACE FUNCTION vidsync.redeem_invite(p_code text, p_token text, p_device text, p_public_key text)
RETURNS TABLE (error_code text, error_message text, project text, device text, status text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_source text := vidsync.request_source();
  v_code_sha256 text := vidsync.secret_sha256('vsi', p_code);
  v_token_sha256 text := vidsync.secret_sha256('vsd', p_token);
  v_invite vidsync.invites;
  v_request vidsync.join_requests;
  v_refusal text;
  v_key_sha256 text;
  v_project text;
  v_request_id bigint;
BEGIN
  DELETE FROM vidsync.redeem_attempts a WHERE a.at < now() - interval '1 hour';
  IF v_source IS NOT NULL AND (SELECT count(*) FROM vidsync.redeem_attempts a
       WHERE a.source = v_source AND NOT a.ok AND a.at > now() - interval '15 minutes') >= 10 THEN
    RAISE EXCEPTION 'too many failed invite redemptions from %: retry in 15 minutes', v_source USING ERRCODE = 'VS429';
  END IF;
  SELECT * INTO v_invite FROM vidsync.invites i WHERE i.code_sha256 = v_code_sha256 FOR UPDATE;
  SELECT p.name INTO v_project FROM vidsync.projects p WHERE p.id = v_invite.project_id;

  SELECT * INTO v_request FROM vidsync.join_requests r WHERE r.token_sha256 = v_token_sha256;
  IF FOUND THEN
    IF v_request.invite_id IS DISTINCT FROM v_invite.id THEN
      RAISE EXCEPTION 'this device token belongs to another invite: join with a fresh token' USING ERRCODE = 'VS409';
    END IF;
    RETURN QUERY SELECT NULL::text, NULL::text, v_project, v_request.name, v_request.status;
    RETURN;
  END IF;

  IF v_invite.id IS NOT NULL AND (SELECT count(*) FROM vidsync.redeem_attempts a
                                   WHERE a.invite_id = v_invite.id AND a.at > now() - interval '1 minute') >= 20 THEN
    RAISE EXCEPTION 'too many redemptions of this invite: retry in a minute' USING ERRCODE = 'VS429';
  END IF;
  v_refusal := CASE
    WHEN v_invite.id IS NULL THEN 'unknown invite code: check that it was copied completely'
    WHEN v_invite.revoked_at IS NOT NULL THEN 'this invite was revoked: ask the operator for a new one'
    WHEN v_invite.expires_at <= now() THEN format('this invite expired at %s: ask the operator for a new one', v_invite.expires_at)
    WHEN v_invite.uses >= v_invite.max_uses THEN format('this invite is used up (%s of %s uses): ask the operator for a new one', v_invite.uses, v_invite.max_uses)
  END;
  IF v_refusal IS NULL THEN
    PERFORM vidsync.check_name('device', p_device);
    v_key_sha256 := vidsync.public_key_sha256(p_public_key);
    v_refusal := CASE
      WHEN EXISTS (SELECT 1 FROM vidsync.devices d WHERE d.project_id = v_invite.project_id AND d.name = p_device AND d.status <> 'released')
        OR EXISTS (SELECT 1 FROM vidsync.join_requests r WHERE r.project_id = v_invite.project_id AND r.name = p_device AND r.status = 'pending')
        THEN format('a device named "%s" already exists in project "%s": join with another --name', p_device, v_project)
      WHEN EXISTS (SELECT 1 FROM vidsync.devices d WHERE d.project_id = v_invite.project_id AND d.public_key_sha256 = v_key_sha256 AND d.status <> 'released')
        OR EXISTS (SELECT 1 FROM vidsync.join_requests r WHERE r.project_id = v_invite.project_id AND r.public_key_sha256 = v_key_sha256 AND r.status = 'pending')
        THEN format('this public key is already registered in project "%s" (a cloned machine?): make a new key', v_project)
    END;
  END IF;
  IF v_refusal IS NULL THEN
    -- A concurrent redemption of another invite with the same name or key (the checks above
    -- missed it): DO NOTHING waits for it, and if it committed this one is refused too.
    INSERT INTO vidsync.join_requests (project_id, invite_id, name, public_key, public_key_sha256, groups, token_sha256, source)
    VALUES (v_invite.project_id, v_invite.id, p_device, p_public_key, v_key_sha256, v_invite.groups, v_token_sha256, v_source)
    ON CONFLICT DO NOTHING
    RETURNING id INTO v_request_id;
    IF v_request_id IS NULL THEN
      v_refusal := format('a device with this name or key is joining project "%s" right now: join with another --name or key', v_project);
    END IF;
  END IF;
  IF v_refusal IS NOT NULL THEN
    INSERT INTO vidsync.redeem_attempts (source, invite_id, ok) VALUES (v_source, v_invite.id, false);
    RETURN QUERY SELECT CASE WHEN v_invite.id IS NULL THEN 'VS404' ELSE 'VS409' END, v_refusal, NULL::text, NULL::text, NULL::text;
    RETURN;
  END IF;

  UPDATE vidsync.invites i SET uses = i.uses + 1 WHERE i.id = v_invite.id;
  INSERT INTO vidsync.redeem_attempts (source, invite_id, ok) VALUES (v_source, v_invite.id, true);
  PERFORM vidsync.audit('invite.redeem', v_invite.project_id, NULL, NULL,
    jsonb_build_object('invite', v_invite.id, 'device', p_device, 'source', v_source));
  RETURN QUERY SELECT NULL::text, NULL::text, v_project, p_device, 'pending'::text;
END $$;

-- device_refresh as in 003, refusing a Syncthing ID that another live device of the project has
-- and auditing a change of it (heartbeats alone are not audited: last_seen_at records them).
CREATE OR REPLACE FUNCTION vidsync.device_refresh(p_token text, p_syncthing_id text DEFAULT NULL)
RETURNS TABLE (project text, device text, status text, ip inet, cidr cidr, lighthouses jsonb, blocklist text[], peers jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.join_requests := vidsync.join_request_by_token(p_token);
  v_syncthing_id text := upper(p_syncthing_id);
  v_device vidsync.devices;
  v_project text;
  v_other text;
BEGIN
  IF v_request.status <> 'approved' THEN
    RAISE EXCEPTION 'this device is %: %', v_request.status,
      CASE v_request.status WHEN 'pending' THEN 'wait for the operator''s approval' ELSE 'join again with a new invite code' END
      USING ERRCODE = 'VS409';
  END IF;
  IF v_syncthing_id IS NOT NULL AND v_syncthing_id !~ '^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$' THEN
    RAISE EXCEPTION 'invalid Syncthing device ID "%": expected eight groups of seven characters', left(p_syncthing_id, 80) USING ERRCODE = 'VS400';
  END IF;
  SELECT p.name INTO v_project FROM vidsync.projects p WHERE p.id = v_request.project_id;
  UPDATE vidsync.devices d SET last_seen_at = now() WHERE d.id = v_request.device_id RETURNING * INTO v_device;
  IF v_device.status = 'active' AND v_syncthing_id IS DISTINCT FROM v_device.syncthing_id AND v_syncthing_id IS NOT NULL THEN
    SELECT d.name INTO v_other FROM vidsync.devices d
     WHERE d.project_id = v_device.project_id AND d.syncthing_id = v_syncthing_id AND d.status = 'active' AND d.id <> v_device.id;
    IF FOUND THEN
      RAISE EXCEPTION 'Syncthing ID % is already used by device "%" of project "%": each device needs its own Syncthing',
        v_syncthing_id, v_other, v_project USING ERRCODE = 'VS409';
    END IF;
    BEGIN
      UPDATE vidsync.devices d SET syncthing_id = v_syncthing_id WHERE d.id = v_device.id;
    EXCEPTION WHEN unique_violation THEN
      RAISE EXCEPTION '%', vidsync.device_conflict('devices_live_syncthing_id', v_project, v_device.name) USING ERRCODE = 'VS409';
    END;
    PERFORM vidsync.audit('device.syncthing_id', v_device.project_id, v_device.id, v_device.ip,
      jsonb_build_object('device', v_device.name, 'old', v_device.syncthing_id, 'new', v_syncthing_id));
    v_device.syncthing_id := v_syncthing_id;
  END IF;
  IF v_device.status IS DISTINCT FROM 'active' THEN
    RETURN QUERY SELECT v_project, v_request.name, coalesce(v_device.status, 'released'), NULL::inet, NULL::cidr, '[]'::jsonb, '{}'::text[], '[]'::jsonb;
    RETURN;
  END IF;
  RETURN QUERY
  SELECT v_project, v_device.name, v_device.status, v_device.ip, n.cidr, n.lighthouses, n.blocklist,
         coalesce((SELECT jsonb_agg(jsonb_build_object('name', d.name, 'ip', host(d.ip), 'syncthingId', d.syncthing_id) ORDER BY d.ip)
                     FROM vidsync.devices d
                    WHERE d.project_id = v_device.project_id AND d.status = 'active' AND NOT d.lighthouse AND d.id <> v_device.id), '[]')
    FROM vidsync.project_network(v_project) n;
END $$;

---------------------------------------------------------------------------------------------
-- Supabase's linter: indexes for the foreign keys that had none (splinter 0001), primary keys
-- for the tables that had none (0004).
CREATE INDEX invites_project ON vidsync.invites (project_id);
CREATE INDEX join_requests_invite ON vidsync.join_requests (invite_id);
CREATE INDEX join_requests_device ON vidsync.join_requests (device_id);

ALTER TABLE vidsync.ip_pool ADD CONSTRAINT ip_pool_pkey PRIMARY KEY (project_id, ip);
ALTER TABLE vidsync.ip_pool DROP CONSTRAINT ip_pool_project_id_ip_key;
ALTER TABLE vidsync.redeem_attempts ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;

-- Every function gets an empty search_path (splinter 0011): a caller's search_path holding a
-- schema others can write must not put a look-alike of a built-in inside a control-plane
-- function. Their bodies name everything of vidsync with its schema; built-ins come from
-- pg_catalog, which Postgres searches first anyway.
DO $$
DECLARE
  v_function regprocedure;
BEGIN
  FOR v_function IN SELECT p.oid FROM pg_catalog.pg_proc p
                     WHERE p.pronamespace = 'vidsync'::regnamespace
                       AND NOT coalesce(p.proconfig, '{}') && ARRAY['search_path=""', 'search_path=']
  LOOP
    EXECUTE format('ALTER FUNCTION %s SET search_path = %L', v_function, '');
  END LOOP;
END $$;

---------------------------------------------------------------------------------------------
-- Grants: as in 003 for what is new here (new functions are executable by PUBLIC by default).
REVOKE ALL ON vidsync.settings FROM PUBLIC, anon, authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON vidsync.settings TO service_role;
ALTER TABLE vidsync.settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY service_role_all ON vidsync.settings TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON SEQUENCE vidsync.redeem_attempts_id_seq FROM PUBLIC, anon, authenticated;
GRANT USAGE, SELECT ON SEQUENCE vidsync.redeem_attempts_id_seq TO service_role;
REVOKE ALL ON FUNCTION vidsync.set_trusted_proxy_header(text), vidsync.device_conflict(text, text, text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.set_trusted_proxy_header(text), vidsync.device_conflict(text, text, text) TO service_role;
