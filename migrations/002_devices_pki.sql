-- Operator PKI: device keys and certificates, lighthouses, revocation.
-- Certificates are signed outside the database (nebula-cert on the operator's machine); the
-- database records who holds which address, key and certificate, and what is revoked.

ALTER TABLE vidsync.devices
  ADD COLUMN public_key text,
  ADD COLUMN public_key_sha256 text,
  ADD COLUMN groups text[] NOT NULL DEFAULT '{}',
  ADD COLUMN syncthing_id text,
  ADD COLUMN lighthouse boolean NOT NULL DEFAULT false,
  ADD COLUMN endpoint text,
  ADD COLUMN relay boolean NOT NULL DEFAULT false,
  ADD COLUMN operator_key boolean NOT NULL DEFAULT false,
  ADD COLUMN revoked_at timestamptz,
  ADD CONSTRAINT devices_lighthouse_endpoint CHECK (NOT lighthouse OR endpoint IS NOT NULL);
-- The same key on two live devices of a project is a cloned machine.
CREATE UNIQUE INDEX devices_live_public_key ON vidsync.devices (project_id, public_key_sha256)
  WHERE status <> 'released' AND public_key_sha256 IS NOT NULL;

CREATE TABLE vidsync.certificates (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  device_id bigint NOT NULL REFERENCES vidsync.devices (id) ON DELETE CASCADE,
  fingerprint text NOT NULL UNIQUE,
  not_after timestamptz NOT NULL,
  issued_at timestamptz NOT NULL DEFAULT now(),
  pem text NOT NULL
);
CREATE INDEX certificates_device ON vidsync.certificates (device_id, issued_at DESC);

CREATE FUNCTION vidsync.live_device(p_project_id bigint, p_project text, p_device text)
RETURNS vidsync.devices LANGUAGE plpgsql STABLE AS $$
DECLARE
  v vidsync.devices;
BEGIN
  SELECT * INTO v FROM vidsync.devices d
   WHERE d.project_id = p_project_id AND d.name = p_device AND d.status <> 'released';
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no device "%" in project "%": see `vidsync device list %`', p_device, p_project, p_project
      USING ERRCODE = 'VS404';
  END IF;
  RETURN v;
END $$;

-- Allocates an address for a new device or lighthouse and records its public key. The caller
-- signs the certificate and records it with record_certificate in the same transaction.
CREATE FUNCTION vidsync.register_device(
  p_project text, p_device text, p_public_key text, p_public_key_sha256 text,
  p_groups text[] DEFAULT '{}', p_syncthing_id text DEFAULT NULL,
  p_lighthouse boolean DEFAULT false, p_endpoint text DEFAULT NULL, p_relay boolean DEFAULT false,
  p_operator_key boolean DEFAULT false)
RETURNS TABLE (device_id bigint, device text, ip inet, prefix_length integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_other text;
  v_group text;
  v_allocation record;
BEGIN
  IF p_public_key_sha256 IS NULL OR p_public_key_sha256 !~ '^[0-9a-f]{64}$' THEN
    RAISE EXCEPTION 'public key digest must be 64 hex digits' USING ERRCODE = 'VS400';
  END IF;
  FOREACH v_group IN ARRAY coalesce(p_groups, '{}') LOOP
    IF v_group !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
      RAISE EXCEPTION 'invalid group "%": use lowercase letters, digits, hyphens and underscores', v_group USING ERRCODE = 'VS400';
    END IF;
  END LOOP;
  IF p_syncthing_id IS NOT NULL AND upper(p_syncthing_id) !~ '^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$' THEN
    RAISE EXCEPTION 'invalid Syncthing device ID "%": expected eight groups of seven characters, as `syncthing --device-id` prints', p_syncthing_id
      USING ERRCODE = 'VS400';
  END IF;
  SELECT d.name INTO v_other FROM vidsync.devices d
   WHERE d.project_id = v_id AND d.public_key_sha256 = p_public_key_sha256 AND d.status <> 'released';
  IF FOUND THEN
    RAISE EXCEPTION 'this public key is already registered as device "%" in project "%" (a cloned machine?): make a new key with `vidsync key create`', v_other, p_project
      USING ERRCODE = 'VS409';
  END IF;
  SELECT * INTO v_allocation FROM vidsync.allocate_ip(p_project, p_device);
  UPDATE vidsync.devices d
     SET public_key = p_public_key, public_key_sha256 = p_public_key_sha256, groups = coalesce(p_groups, '{}'),
         syncthing_id = upper(p_syncthing_id), lighthouse = p_lighthouse, endpoint = p_endpoint, relay = p_relay,
         operator_key = p_operator_key
   WHERE d.id = v_allocation.device_id;
  PERFORM vidsync.audit(CASE WHEN p_lighthouse THEN 'lighthouse.register' ELSE 'device.register' END, v_id, v_allocation.device_id,
    v_allocation.ip, jsonb_build_object('device', p_device, 'groups', p_groups, 'operator_key', p_operator_key));
  RETURN QUERY SELECT v_allocation.device_id, p_device, v_allocation.ip,
    (SELECT masklen(p.cidr) FROM vidsync.projects p WHERE p.id = v_id);
END $$;

CREATE FUNCTION vidsync.record_certificate(p_project text, p_device text, p_fingerprint text, p_not_after timestamptz, p_pem text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_device vidsync.devices := vidsync.live_device(v_id, p_project, p_device);
BEGIN
  IF v_device.status <> 'active' THEN
    RAISE EXCEPTION 'device "%" in project "%" is %: it gets no new certificate', p_device, p_project, v_device.status USING ERRCODE = 'VS409';
  END IF;
  INSERT INTO vidsync.certificates (device_id, fingerprint, not_after, pem) VALUES (v_device.id, p_fingerprint, p_not_after, p_pem);
  PERFORM vidsync.audit('cert.issue', v_id, v_device.id, v_device.ip,
    jsonb_build_object('device', p_device, 'fingerprint', p_fingerprint, 'not_after', p_not_after));
END $$;

-- Devices with their current certificate. p_device NULL lists all live devices of the project.
CREATE FUNCTION vidsync.list_devices(p_project text, p_device text DEFAULT NULL)
RETURNS TABLE (name text, ip inet, status text, lighthouse boolean, endpoint text, relay boolean, groups text[],
               syncthing_id text, operator_key boolean, public_key text, fingerprint text, not_after timestamptz,
               created_at timestamptz, revoked_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
BEGIN
  IF p_device IS NOT NULL THEN
    PERFORM vidsync.live_device(v_id, p_project, p_device);
  END IF;
  RETURN QUERY
  SELECT d.name, d.ip, d.status, d.lighthouse, d.endpoint, d.relay, d.groups, d.syncthing_id, d.operator_key,
         d.public_key, c.fingerprint, c.not_after, d.created_at, d.revoked_at
    FROM vidsync.devices d
    LEFT JOIN LATERAL (SELECT c.fingerprint, c.not_after FROM vidsync.certificates c
                        WHERE c.device_id = d.id ORDER BY c.issued_at DESC, c.id DESC LIMIT 1) c ON true
   WHERE d.project_id = v_id AND d.status <> 'released' AND (p_device IS NULL OR d.name = p_device)
   ORDER BY d.ip;
END $$;

-- What a device's configuration needs to know about its project: network, lighthouses, and
-- the fingerprints of revoked certificates that have not expired yet (Nebula's blocklist).
CREATE FUNCTION vidsync.project_network(p_project text)
RETURNS TABLE (cidr cidr, lighthouses jsonb, blocklist text[])
LANGUAGE sql STABLE AS $$
  SELECT p.cidr,
         coalesce((SELECT jsonb_agg(jsonb_build_object('name', d.name, 'ip', host(d.ip), 'endpoint', d.endpoint, 'relay', d.relay) ORDER BY d.ip)
                     FROM vidsync.devices d WHERE d.project_id = p.id AND d.lighthouse AND d.status = 'active'), '[]'),
         coalesce((SELECT array_agg(c.fingerprint ORDER BY c.fingerprint)
                     FROM vidsync.certificates c JOIN vidsync.devices d ON d.id = c.device_id
                    WHERE d.project_id = p.id AND d.revoked_at IS NOT NULL AND c.not_after > now()), '{}')
    FROM vidsync.projects p
   WHERE p.id = vidsync.project_id(p_project);
$$;

-- Revokes a device: its certificates join the project's blocklist and its address is quarantined.
CREATE FUNCTION vidsync.revoke_device(p_project text, p_device text)
RETURNS TABLE (device text, ip inet, quarantined_until timestamptz, fingerprints text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_device vidsync.devices := vidsync.live_device(v_id, p_project, p_device);
  v_release record;
BEGIN
  IF v_device.status = 'revoked' THEN
    RAISE EXCEPTION 'device "%" in project "%" is already revoked', p_device, p_project USING ERRCODE = 'VS409';
  END IF;
  SELECT * INTO v_release FROM vidsync.release_ip(p_project, p_device, 'revoked');
  UPDATE vidsync.devices d SET revoked_at = now() WHERE d.id = v_device.id;
  RETURN QUERY SELECT p_device, v_release.ip, v_release.quarantined_until,
    coalesce((SELECT array_agg(c.fingerprint ORDER BY c.fingerprint) FROM vidsync.certificates c WHERE c.device_id = v_device.id), '{}');
END $$;

-- Releases a revoked device's name (its address is already quarantined), or an active device's
-- address and name. Revoked certificates stay on the blocklist until they expire.
CREATE FUNCTION vidsync.release_device(p_project text, p_device text)
RETURNS TABLE (device text, ip inet, quarantined_until timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
  v_device vidsync.devices := vidsync.live_device(v_id, p_project, p_device);
  v_until timestamptz;
BEGIN
  IF v_device.status = 'active' THEN
    RETURN QUERY SELECT * FROM vidsync.release_ip(p_project, p_device);
    RETURN;
  END IF;
  SELECT i.quarantined_until INTO v_until FROM vidsync.ip_pool i WHERE i.project_id = v_id AND i.ip = v_device.ip;
  UPDATE vidsync.devices d SET status = 'released' WHERE d.id = v_device.id;
  PERFORM vidsync.audit('device.release', v_id, v_device.id, v_device.ip, jsonb_build_object('device', p_device));
  RETURN QUERY SELECT p_device, v_device.ip, v_until;
END $$;
