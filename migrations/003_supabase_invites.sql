-- The security model for Supabase, invites, join requests with device tokens, heartbeats and
-- the reclaim of stale devices.
--
-- Through Supabase's API (PostgREST) requests run as `anon` (devices: the anon key) or
-- `service_role` (operators: the service-role key). service_role reaches the tables only through
-- the operator functions; anon may execute only the SECURITY DEFINER device functions granted at
-- the end, each of which takes an invite code or a device token. Only their sha256 is stored.
-- A later migration that adds a function must revoke EXECUTE from PUBLIC (Postgres grants it to
-- everyone by default); test/supabase-security.test.ts fails when one is left callable by anon.

-- Supabase's API roles, created where missing (plain Postgres, PGlite) so that the same grants
-- hold everywhere. Roles belong to the cluster: a migration of another database may create one
-- concurrently.
DO $$
DECLARE
  v_role text;
BEGIN
  FOREACH v_role IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
      END;
    END IF;
  END LOOP;
END $$;

ALTER TABLE vidsync.devices ADD COLUMN last_seen_at timestamptz;

-- Through PostgREST the session user is always `authenticator`; the JWT's role says who acted.
ALTER TABLE vidsync.audit_log ALTER COLUMN actor
  SET DEFAULT coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role', session_user);

CREATE TABLE vidsync.invites (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES vidsync.projects (id) ON DELETE CASCADE,
  code_sha256 text NOT NULL UNIQUE CHECK (code_sha256 ~ '^[0-9a-f]{64}$'),
  groups text[] NOT NULL DEFAULT '{}',
  max_uses integer NOT NULL CHECK (max_uses BETWEEN 1 AND 10000),
  uses integer NOT NULL DEFAULT 0 CHECK (uses BETWEEN 0 AND max_uses),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A device that redeemed an invite. It holds no address until the operator approves it, so
-- requests that are never approved cost nothing. Its token identifies the device from then on.
CREATE TABLE vidsync.join_requests (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  project_id bigint NOT NULL REFERENCES vidsync.projects (id) ON DELETE CASCADE,
  invite_id bigint NOT NULL REFERENCES vidsync.invites (id) ON DELETE CASCADE,
  name text NOT NULL,
  public_key text NOT NULL,
  public_key_sha256 text NOT NULL,
  groups text[] NOT NULL,
  token_sha256 text NOT NULL UNIQUE,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
  device_id bigint REFERENCES vidsync.devices (id) ON DELETE SET NULL,
  -- The files of the device's bundle, which the device fetches with its token: never a key.
  bundle jsonb CHECK (bundle IS NULL OR position('PRIVATE KEY' IN bundle::text) = 0),
  source text,
  created_at timestamptz NOT NULL DEFAULT now(),
  decided_at timestamptz
);
CREATE UNIQUE INDEX join_requests_pending_name ON vidsync.join_requests (project_id, name) WHERE status = 'pending';
CREATE UNIQUE INDEX join_requests_pending_key ON vidsync.join_requests (project_id, public_key_sha256) WHERE status = 'pending';

-- Recent redemptions, for rate limiting; older rows are pruned as new ones arrive.
CREATE TABLE vidsync.redeem_attempts (
  at timestamptz NOT NULL DEFAULT now(),
  source text NOT NULL,
  invite_id bigint,
  ok boolean NOT NULL
);
CREATE INDEX redeem_attempts_at ON vidsync.redeem_attempts (at);
CREATE INDEX redeem_attempts_source ON vidsync.redeem_attempts (source, at);
CREATE INDEX redeem_attempts_invite ON vidsync.redeem_attempts (invite_id, at);

-- The sha256 under which a secret is stored. Secrets are 32 random bytes in base64url behind a
-- prefix: vsi_ for invite codes, vsd_ for device tokens. The message never repeats the secret.
CREATE FUNCTION vidsync.secret_sha256(p_prefix text, p_secret text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF p_secret IS NULL OR p_secret !~ ('^' || p_prefix || '_[A-Za-z0-9_-]{43}$') THEN
    RAISE EXCEPTION 'malformed %: expected %_ followed by 43 letters, digits, - or _; check that it was copied completely',
      CASE p_prefix WHEN 'vsi' THEN 'invite code' ELSE 'device token' END, p_prefix USING ERRCODE = 'VS400';
  END IF;
  RETURN encode(sha256(convert_to(p_secret, 'UTF8')), 'hex');
END $$;

CREATE FUNCTION vidsync.check_groups(p_groups text[]) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  v_group text;
BEGIN
  FOREACH v_group IN ARRAY coalesce(p_groups, '{}') LOOP
    IF v_group !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
      RAISE EXCEPTION 'invalid group "%": use lowercase letters, digits, hyphens and underscores', v_group USING ERRCODE = 'VS400';
    END IF;
  END LOOP;
END $$;

-- sha256 of the raw key bytes of a Nebula public key in the canonical PEM `vidsync key create`
-- writes, as the CLI computes it.
CREATE FUNCTION vidsync.public_key_sha256(p_pem text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  v_body text[] := regexp_match(coalesce(p_pem, ''),
    '^-----BEGIN NEBULA X25519 PUBLIC KEY-----\n([A-Za-z0-9+/]{43}=)\n-----END NEBULA X25519 PUBLIC KEY-----\n$');
BEGIN
  IF v_body IS NULL THEN
    RAISE EXCEPTION 'not a Nebula public key: expected the PEM that `vidsync key create` writes' USING ERRCODE = 'VS400';
  END IF;
  RETURN encode(sha256(decode(v_body[1], 'base64')), 'hex');
END $$;

-- Who is redeeming, for rate limiting: the client address that the proxy in front of PostgREST
-- reports (Supabase's gateway), else the connection's address. Where no trusted proxy sets these
-- headers a client can forge them; the per-invite limit does not depend on them.
CREATE FUNCTION vidsync.request_source() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    nullif(current_setting('request.headers', true), '')::jsonb ->> 'cf-connecting-ip',
    nullif(current_setting('request.headers', true), '')::jsonb ->> 'x-real-ip',
    host(inet_client_addr()),
    'local');
$$;

CREATE TYPE vidsync.invite_info AS (id bigint, project text, groups text[], max_uses integer, uses integer, state text,
                                    expires_at timestamptz, revoked_at timestamptz, created_at timestamptz, pending integer);

CREATE FUNCTION vidsync.list_invites(p_project text) RETURNS SETOF vidsync.invite_info LANGUAGE sql STABLE AS $$
  SELECT i.id, p.name, i.groups, i.max_uses, i.uses,
         CASE WHEN i.revoked_at IS NOT NULL THEN 'revoked'
              WHEN i.expires_at <= now() THEN 'expired'
              WHEN i.uses >= i.max_uses THEN 'used'
              ELSE 'active' END,
         i.expires_at, i.revoked_at, i.created_at,
         (SELECT count(*)::integer FROM vidsync.join_requests r WHERE r.invite_id = i.id AND r.status = 'pending')
    FROM vidsync.invites i
    JOIN vidsync.projects p ON p.id = i.project_id
   WHERE i.project_id = vidsync.project_id(p_project)
   ORDER BY i.id;
$$;

-- The operator's client makes the code and sends only its hash: the code never reaches the server
-- before a device redeems it.
CREATE FUNCTION vidsync.create_invite(p_project text, p_code_sha256 text, p_max_uses integer DEFAULT 1,
                                      p_expires_seconds integer DEFAULT 86400, p_groups text[] DEFAULT '{}')
RETURNS SETOF vidsync.invite_info
LANGUAGE plpgsql AS $$
DECLARE
  v_project_id bigint := vidsync.project_id(p_project);
  v_id bigint;
BEGIN
  IF p_code_sha256 IS NULL OR p_code_sha256 !~ '^[0-9a-f]{64}$' THEN
    RAISE EXCEPTION 'invite code digest must be 64 hex digits' USING ERRCODE = 'VS400';
  END IF;
  IF p_max_uses IS NULL OR p_max_uses NOT BETWEEN 1 AND 10000 THEN
    RAISE EXCEPTION 'uses must be 1 to 10000, got %', p_max_uses USING ERRCODE = 'VS400';
  END IF;
  IF p_expires_seconds IS NULL OR p_expires_seconds NOT BETWEEN 60 AND 31536000 THEN
    RAISE EXCEPTION 'an invite must expire within 1m to 365d, got %s', p_expires_seconds USING ERRCODE = 'VS400';
  END IF;
  PERFORM vidsync.check_groups(p_groups);
  INSERT INTO vidsync.invites (project_id, code_sha256, groups, max_uses, expires_at)
  VALUES (v_project_id, p_code_sha256, coalesce(p_groups, '{}'), p_max_uses, now() + make_interval(secs => p_expires_seconds))
  RETURNING id INTO v_id;
  PERFORM vidsync.audit('invite.create', v_project_id, NULL, NULL,
    jsonb_build_object('invite', v_id, 'max_uses', p_max_uses, 'expires_seconds', p_expires_seconds, 'groups', p_groups));
  RETURN QUERY SELECT * FROM vidsync.list_invites(p_project) l WHERE l.id = v_id;
END $$;

-- Revoking an invite also rejects the devices still waiting with it; approved ones stay.
CREATE FUNCTION vidsync.revoke_invite(p_project text, p_id bigint)
RETURNS TABLE (id bigint, revoked_at timestamptz, rejected integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_project_id bigint := vidsync.project_id(p_project);
  v_invite vidsync.invites;
  v_rejected integer;
BEGIN
  SELECT * INTO v_invite FROM vidsync.invites i WHERE i.id = p_id AND i.project_id = v_project_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no invite % in project "%": see `vidsync invite list %`', p_id, p_project, p_project USING ERRCODE = 'VS404';
  END IF;
  IF v_invite.revoked_at IS NOT NULL THEN
    RAISE EXCEPTION 'invite % of project "%" is already revoked', p_id, p_project USING ERRCODE = 'VS409';
  END IF;
  UPDATE vidsync.invites i SET revoked_at = now() WHERE i.id = p_id;
  UPDATE vidsync.join_requests r SET status = 'rejected', decided_at = now() WHERE r.invite_id = p_id AND r.status = 'pending';
  GET DIAGNOSTICS v_rejected = ROW_COUNT;
  PERFORM vidsync.audit('invite.revoke', v_project_id, NULL, NULL, jsonb_build_object('invite', p_id, 'rejected', v_rejected));
  RETURN QUERY SELECT p_id, now(), v_rejected;
END $$;

-- Devices waiting for the operator's signature, of one project or of all.
CREATE FUNCTION vidsync.list_join_requests(p_project text DEFAULT NULL)
RETURNS TABLE (id bigint, project text, device text, public_key text, groups text[], invite_id bigint, source text, created_at timestamptz)
LANGUAGE sql STABLE AS $$
  SELECT r.id, p.name, r.name, r.public_key, r.groups, r.invite_id, r.source, r.created_at
    FROM vidsync.join_requests r
    JOIN vidsync.projects p ON p.id = r.project_id
   WHERE r.status = 'pending' AND (p_project IS NULL OR r.project_id = vidsync.project_id(p_project))
   ORDER BY r.id;
$$;

-- Approves a join request in two calls, so that nothing is allocated unless the certificate is
-- recorded with it, over transports without transactions too. Without p_ip it only tries the
-- registration and undoes it, answering the address the device would get (approved false); the
-- operator signs for that address and calls again with the certificate and bundle files. The
-- address is committed only when the registration gets exactly p_ip; when a concurrent one took
-- it the call answers the new candidate, again with approved false.
CREATE FUNCTION vidsync.approve_join_request(p_request_id bigint, p_ip inet DEFAULT NULL, p_fingerprint text DEFAULT NULL,
                                             p_not_after timestamptz DEFAULT NULL, p_cert_pem text DEFAULT NULL, p_bundle jsonb DEFAULT NULL)
RETURNS TABLE (approved boolean, project text, device text, ip inet, prefix_length integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.join_requests;
  v_project text;
  v_registration record;
BEGIN
  SELECT * INTO v_request FROM vidsync.join_requests r WHERE r.id = p_request_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no join request %: see `vidsync device approve` for the pending ones', p_request_id USING ERRCODE = 'VS404';
  END IF;
  SELECT p.name INTO v_project FROM vidsync.projects p WHERE p.id = v_request.project_id;
  IF v_request.status <> 'pending' THEN
    RAISE EXCEPTION 'device "%" of project "%" is already %', v_request.name, v_project, v_request.status USING ERRCODE = 'VS409';
  END IF;
  IF p_ip IS NOT NULL AND (p_fingerprint IS NULL OR p_not_after IS NULL OR p_cert_pem IS NULL
                           OR jsonb_typeof(p_bundle) IS DISTINCT FROM 'object'
                           OR NOT p_bundle ?& ARRAY['ca.crt', 'node.crt', 'nebula.yml', 'vidsync.json']) THEN
    RAISE EXCEPTION 'approving with an address needs the certificate and the bundle files' USING ERRCODE = 'VS400';
  END IF;
  IF position('PRIVATE KEY' IN coalesce(p_bundle::text, '')) > 0 THEN
    RAISE EXCEPTION 'refusing to store a bundle that holds a private key' USING ERRCODE = 'VS400';
  END IF;
  BEGIN
    SELECT * INTO v_registration
      FROM vidsync.register_device(v_project, v_request.name, v_request.public_key, v_request.public_key_sha256, v_request.groups);
    IF p_ip IS NULL OR v_registration.ip <> p_ip THEN
      RAISE EXCEPTION USING ERRCODE = 'VSRTY'; -- rolls the registration back; v_registration keeps the candidate
    END IF;
  EXCEPTION WHEN SQLSTATE 'VSRTY' THEN
    RETURN QUERY SELECT false, v_project, v_request.name, v_registration.ip, v_registration.prefix_length;
    RETURN;
  END;
  PERFORM vidsync.record_certificate(v_project, v_request.name, p_fingerprint, p_not_after, p_cert_pem);
  UPDATE vidsync.join_requests r
     SET status = 'approved', device_id = v_registration.device_id, bundle = p_bundle, decided_at = now()
   WHERE r.id = p_request_id;
  PERFORM vidsync.audit('join.approve', v_request.project_id, v_registration.device_id, v_registration.ip,
    jsonb_build_object('device', v_request.name, 'invite', v_request.invite_id));
  RETURN QUERY SELECT true, v_project, v_request.name, v_registration.ip, v_registration.prefix_length;
END $$;

-- Revokes and releases the devices not heard from (last heartbeat, else registration) for
-- p_stale_seconds: their certificates join the blocklist, so the address can go to a new device
-- once quarantined. Lighthouses are left alone (they send no heartbeat). p_dry_run only lists.
CREATE FUNCTION vidsync.reclaim_stale(p_project text, p_stale_seconds integer, p_dry_run boolean DEFAULT false)
RETURNS TABLE (device text, ip inet, last_seen_at timestamptz, created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_project_id bigint := vidsync.project_id(p_project);
  v record;
BEGIN
  IF p_stale_seconds IS NULL OR p_stale_seconds < 3600 THEN
    RAISE EXCEPTION 'the stale threshold must be at least 1h, got %s', p_stale_seconds USING ERRCODE = 'VS400';
  END IF;
  -- FOR UPDATE re-checks each row: a device whose heartbeat commits meanwhile is skipped.
  FOR v IN SELECT d.name, d.ip, d.last_seen_at, d.created_at FROM vidsync.devices d
            WHERE d.project_id = v_project_id AND d.status = 'active' AND NOT d.lighthouse
              AND coalesce(d.last_seen_at, d.created_at) < now() - make_interval(secs => p_stale_seconds)
            ORDER BY d.ip FOR UPDATE LOOP
    IF NOT coalesce(p_dry_run, false) THEN
      PERFORM vidsync.revoke_device(p_project, v.name);
      PERFORM vidsync.release_device(p_project, v.name);
    END IF;
    RETURN QUERY SELECT v.name, v.ip, v.last_seen_at, v.created_at;
  END LOOP;
END $$;

---------------------------------------------------------------------------------------------
-- Device-facing functions: SECURITY DEFINER (they run as the owner, past row-level security)
-- with an empty search_path, so every name in them is schema-qualified and nothing a caller
-- creates can stand in for it.

-- Redeems an invite: one use is taken under the invite's row lock, so concurrent redemptions of
-- the last use cannot both succeed. A refused code is answered in the result rather than raised,
-- because raising would roll back the attempt that the rate limit counts. Retrying with the same
-- device token (the answer was lost) returns the same request and takes no second use.
CREATE FUNCTION vidsync.redeem_invite(p_code text, p_token text, p_device text, p_public_key text)
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
BEGIN
  DELETE FROM vidsync.redeem_attempts a WHERE a.at < now() - interval '1 hour';
  IF (SELECT count(*) FROM vidsync.redeem_attempts a
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
  IF v_refusal IS NOT NULL THEN
    INSERT INTO vidsync.redeem_attempts (source, invite_id, ok) VALUES (v_source, v_invite.id, false);
    RETURN QUERY SELECT CASE WHEN v_invite.id IS NULL THEN 'VS404' ELSE 'VS409' END, v_refusal, NULL::text, NULL::text, NULL::text;
    RETURN;
  END IF;

  PERFORM vidsync.check_name('device', p_device);
  v_key_sha256 := vidsync.public_key_sha256(p_public_key);
  IF EXISTS (SELECT 1 FROM vidsync.devices d WHERE d.project_id = v_invite.project_id AND d.name = p_device AND d.status <> 'released')
     OR EXISTS (SELECT 1 FROM vidsync.join_requests r WHERE r.project_id = v_invite.project_id AND r.name = p_device AND r.status = 'pending') THEN
    RAISE EXCEPTION 'a device named "%" already exists in project "%": join with another --name', p_device, v_project USING ERRCODE = 'VS409';
  END IF;
  IF EXISTS (SELECT 1 FROM vidsync.devices d WHERE d.project_id = v_invite.project_id AND d.public_key_sha256 = v_key_sha256 AND d.status <> 'released')
     OR EXISTS (SELECT 1 FROM vidsync.join_requests r WHERE r.project_id = v_invite.project_id AND r.public_key_sha256 = v_key_sha256 AND r.status = 'pending') THEN
    RAISE EXCEPTION 'this public key is already registered in project "%" (a cloned machine?): make a new key', v_project USING ERRCODE = 'VS409';
  END IF;

  UPDATE vidsync.invites i SET uses = i.uses + 1 WHERE i.id = v_invite.id;
  INSERT INTO vidsync.join_requests (project_id, invite_id, name, public_key, public_key_sha256, groups, token_sha256, source)
  VALUES (v_invite.project_id, v_invite.id, p_device, p_public_key, v_key_sha256, v_invite.groups, v_token_sha256, v_source);
  INSERT INTO vidsync.redeem_attempts (source, invite_id, ok) VALUES (v_source, v_invite.id, true);
  PERFORM vidsync.audit('invite.redeem', v_invite.project_id, NULL, NULL,
    jsonb_build_object('invite', v_invite.id, 'device', p_device, 'source', v_source));
  RETURN QUERY SELECT NULL::text, NULL::text, v_project, p_device, 'pending'::text;
END $$;

CREATE FUNCTION vidsync.join_request_by_token(p_token text) RETURNS vidsync.join_requests LANGUAGE plpgsql STABLE AS $$
DECLARE
  v vidsync.join_requests;
BEGIN
  SELECT * INTO v FROM vidsync.join_requests r WHERE r.token_sha256 = vidsync.secret_sha256('vsd', p_token);
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unknown device token: join again with an invite code' USING ERRCODE = 'VS404';
  END IF;
  RETURN v;
END $$;

-- Where a device's join stands: pending, rejected, or its device's status (active, revoked,
-- released); the bundle files once active.
CREATE FUNCTION vidsync.device_bundle(p_token text)
RETURNS TABLE (project text, device text, status text, bundle jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT p.name, r.name, s.status, CASE WHEN s.status = 'active' THEN r.bundle END
    FROM vidsync.join_request_by_token(p_token) r
    JOIN vidsync.projects p ON p.id = r.project_id
    LEFT JOIN vidsync.devices d ON d.id = r.device_id
   CROSS JOIN LATERAL (SELECT CASE WHEN r.status = 'approved' THEN coalesce(d.status, 'released') ELSE r.status END AS status) s;
$$;

-- A device's heartbeat, answered with what its configuration must follow: lighthouses, the
-- blocklist and its peers. A device that is no longer active learns its status and nothing else.
-- p_syncthing_id lets a device publish its Syncthing ID to its peers.
CREATE FUNCTION vidsync.device_refresh(p_token text, p_syncthing_id text DEFAULT NULL)
RETURNS TABLE (project text, device text, status text, ip inet, cidr cidr, lighthouses jsonb, blocklist text[], peers jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.join_requests := vidsync.join_request_by_token(p_token);
  v_device vidsync.devices;
  v_project text;
BEGIN
  IF v_request.status <> 'approved' THEN
    RAISE EXCEPTION 'this device is %: %', v_request.status,
      CASE v_request.status WHEN 'pending' THEN 'wait for the operator''s approval' ELSE 'join again with a new invite code' END
      USING ERRCODE = 'VS409';
  END IF;
  IF p_syncthing_id IS NOT NULL AND upper(p_syncthing_id) !~ '^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$' THEN
    RAISE EXCEPTION 'invalid Syncthing device ID "%": expected eight groups of seven characters', p_syncthing_id USING ERRCODE = 'VS400';
  END IF;
  UPDATE vidsync.devices d
     SET last_seen_at = now(),
         syncthing_id = CASE WHEN d.status = 'active' THEN coalesce(upper(p_syncthing_id), d.syncthing_id) ELSE d.syncthing_id END
   WHERE d.id = v_request.device_id
  RETURNING * INTO v_device;
  SELECT p.name INTO v_project FROM vidsync.projects p WHERE p.id = v_request.project_id;
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

-- Lets any client check that it speaks this schema before calling anything else. Two columns:
-- a function with one output column returns bare values, not rows.
CREATE FUNCTION vidsync.schema_version() RETURNS TABLE (version integer, name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT m.version, m.name FROM vidsync.schema_migrations m ORDER BY m.version DESC LIMIT 1;
$$;

---------------------------------------------------------------------------------------------
-- Grants and row-level security.

REVOKE ALL ON SCHEMA vidsync FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA vidsync FROM PUBLIC, anon, authenticated;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA vidsync FROM PUBLIC, anon, authenticated;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA vidsync FROM PUBLIC, anon, authenticated;

GRANT USAGE ON SCHEMA vidsync TO service_role, anon;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA vidsync TO service_role;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA vidsync TO service_role;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA vidsync TO service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA vidsync GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA vidsync GRANT USAGE, SELECT ON SEQUENCES TO service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA vidsync GRANT EXECUTE ON FUNCTIONS TO service_role;

GRANT EXECUTE ON FUNCTION vidsync.redeem_invite(text, text, text, text), vidsync.device_bundle(text),
  vidsync.device_refresh(text, text), vidsync.schema_version() TO anon;

-- Without a policy for them anon and authenticated see no row even if a table were granted to
-- them by mistake. service_role gets a policy because on plain Postgres it lacks BYPASSRLS.
DO $$
DECLARE
  v_table text;
BEGIN
  FOR v_table IN SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'vidsync' LOOP
    EXECUTE format('ALTER TABLE vidsync.%I ENABLE ROW LEVEL SECURITY', v_table);
    EXECUTE format('CREATE POLICY service_role_all ON vidsync.%I TO service_role USING (true) WITH CHECK (true)', v_table);
  END LOOP;
  -- populate_pool's ANALYZE, run as service_role, needs MAINTAIN (PostgreSQL 17+); without it the
  -- statistics wait for autovacuum.
  IF current_setting('server_version_num')::integer >= 170000 THEN
    EXECUTE 'GRANT MAINTAIN ON vidsync.ip_pool TO service_role';
  END IF;
END $$;
