-- Issue 14, the rest of the certificate lifecycle:
--
--  - A new key on renewal. A device may ask for its renewal with a new public key (made on the
--    device; the private key never leaves it). The request records it as a key change, which the
--    signer does not sign until the operator approved it (`vidsync device approve PROJECT
--    --key-change DEVICE`, approve_key_change). complete_renewal checks the key the signer signed:
--    the registered key for a plain renewal, the approved new key for a key change; anything else
--    is refused, and the device row takes the new key with its certificate.
--  - The control plane's clock for devices: device_certificate answers the database's now(), so a
--    device decides when to renew by it and can say when its own clock is off; and when its open
--    renewal was requested, so it can say that no signer has answered since.
--  - CA rotation in one call (rotate_project_cas): every project trusts the old and the new CA or
--    none does, on every backend (the Supabase API runs each call in one transaction).

ALTER TABLE vidsync.renewal_requests
  -- NULL: the registered key again. Otherwise the device's new key, signed only once approved.
  ADD COLUMN public_key text,
  ADD COLUMN public_key_sha256 text CHECK (public_key_sha256 ~ '^[0-9a-f]{64}$'),
  ADD COLUMN key_approved_at timestamptz,
  ADD CONSTRAINT renewal_requests_key CHECK ((public_key IS NULL) = (public_key_sha256 IS NULL)),
  ADD CONSTRAINT renewal_requests_key_approval CHECK (key_approved_at IS NULL OR public_key IS NOT NULL);

-- Where a request's key change stands: none, pending (the operator's approval) or approved.
CREATE FUNCTION vidsync.key_change_state(p_request vidsync.renewal_requests) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
  SELECT CASE WHEN p_request.public_key IS NULL THEN 'none' WHEN p_request.key_approved_at IS NULL THEN 'pending' ELSE 'approved' END;
$$;

-- Device-facing: asks for a new certificate, for the registered key or (p_public_key) a new one.
-- Idempotent while a request is open; a new key given later turns the open request into a key
-- change (a different new key needs a new approval); a request without a key keeps the key change.
DROP FUNCTION vidsync.device_request_renewal(text, text);
CREATE FUNCTION vidsync.device_request_renewal(p_token text, p_fingerprint text DEFAULT NULL, p_public_key text DEFAULT NULL)
RETURNS TABLE (request_id bigint, status text, requested_at timestamptz, key_change text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_device vidsync.devices := vidsync.active_device_by_token(p_token);
  v_key_sha256 text;
  v_request vidsync.renewal_requests;
BEGIN
  IF p_fingerprint IS NOT NULL AND p_fingerprint !~ '^[0-9a-f]{64}$' THEN
    RAISE EXCEPTION 'a certificate fingerprint is 64 hex digits' USING ERRCODE = 'VS400';
  END IF;
  IF p_public_key IS NOT NULL THEN
    v_key_sha256 := vidsync.public_key_sha256(p_public_key);
    IF v_key_sha256 = v_device.public_key_sha256 THEN
      v_key_sha256 := NULL; -- the registered key: a plain renewal
    ELSIF EXISTS (SELECT 1 FROM vidsync.devices d WHERE d.project_id = v_device.project_id AND d.public_key_sha256 = v_key_sha256 AND d.status <> 'released') THEN
      RAISE EXCEPTION 'this public key is already registered in the project (a cloned machine?): make another one' USING ERRCODE = 'VS409';
    END IF;
  END IF;
  INSERT INTO vidsync.renewal_requests (device_id, fingerprint, public_key, public_key_sha256)
  VALUES (v_device.id, p_fingerprint, CASE WHEN v_key_sha256 IS NOT NULL THEN p_public_key END, v_key_sha256)
  ON CONFLICT (device_id) WHERE status = 'pending' DO NOTHING
  RETURNING * INTO v_request;
  IF FOUND THEN
    PERFORM vidsync.audit(CASE WHEN v_key_sha256 IS NULL THEN 'cert.renewal_request' ELSE 'cert.key_change_request' END, v_device.project_id, v_device.id, v_device.ip,
      jsonb_build_object('device', v_device.name) || CASE WHEN v_key_sha256 IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('public_key_sha256', v_key_sha256) END);
  ELSE
    SELECT * INTO v_request FROM vidsync.renewal_requests r WHERE r.device_id = v_device.id AND r.status = 'pending' FOR UPDATE;
    IF v_key_sha256 IS NOT NULL AND v_request.public_key_sha256 IS DISTINCT FROM v_key_sha256 THEN
      UPDATE vidsync.renewal_requests r SET public_key = p_public_key, public_key_sha256 = v_key_sha256, key_approved_at = NULL
       WHERE r.id = v_request.id RETURNING * INTO v_request;
      PERFORM vidsync.audit('cert.key_change_request', v_device.project_id, v_device.id, v_device.ip,
        jsonb_build_object('device', v_device.name, 'public_key_sha256', v_key_sha256, 'request', v_request.id));
    END IF;
  END IF;
  RETURN QUERY SELECT v_request.id, v_request.status, v_request.requested_at, vidsync.key_change_state(v_request);
END $$;

-- Device-facing: the device's newest certificate, its open renewal (when asked, and where its key
-- change stands), and the control plane's clock.
DROP FUNCTION vidsync.device_certificate(text);
CREATE FUNCTION vidsync.device_certificate(p_token text)
RETURNS TABLE (fingerprint text, not_after timestamptz, pem text, renewal_pending boolean, renewal_requested_at timestamptz, key_change text, server_now timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT c.fingerprint, c.not_after, c.pem, r.id IS NOT NULL, r.requested_at, CASE WHEN r.id IS NULL THEN NULL ELSE vidsync.key_change_state(r) END, now()
    FROM vidsync.active_device_by_token(p_token) d
    LEFT JOIN LATERAL (SELECT c.fingerprint, c.not_after, c.pem FROM vidsync.certificates c
                        WHERE c.device_id = d.id ORDER BY c.issued_at DESC, c.id DESC LIMIT 1) c ON true
    LEFT JOIN vidsync.renewal_requests r ON r.device_id = d.id AND r.status = 'pending';
$$;

-- Operator (the signer): as in 008, with the key to sign (the new one for a key change) and where
-- the key change stands; the signer signs none that is pending.
DROP FUNCTION vidsync.signer_pending(text);
CREATE FUNCTION vidsync.signer_pending(p_project text)
RETURNS TABLE (request_id bigint, device text, ip inet, prefix_length integer, groups text[], public_key text, lifetime_seconds integer, requested_at timestamptz, key_change text)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_id bigint := vidsync.project_id(p_project);
BEGIN
  UPDATE vidsync.projects p SET signer_seen_at = now() WHERE p.id = v_id;
  RETURN QUERY
  SELECT r.id, d.name, d.ip, masklen(p.cidr), d.groups, coalesce(r.public_key, d.public_key), l.device_cert_seconds, r.requested_at, vidsync.key_change_state(r)
    FROM vidsync.renewal_requests r
    JOIN vidsync.devices d ON d.id = r.device_id
    JOIN vidsync.projects p ON p.id = d.project_id
   CROSS JOIN vidsync.project_cert_lifetime(p_project) l
   WHERE d.project_id = v_id AND r.status = 'pending' AND d.status = 'active' AND d.revoked_at IS NULL AND d.public_key IS NOT NULL
   ORDER BY r.requested_at, r.id;
END $$;

-- Operator (the signer): records the certificate signed for a renewal, as in 008 (revocation
-- wins), for the key it signed: the registered key, or the new key of an approved key change,
-- which becomes the device's key. Without p_public_key (a signer of an earlier release) only a
-- plain renewal is recorded.
DROP FUNCTION vidsync.complete_renewal(bigint, text, timestamptz, text);
CREATE FUNCTION vidsync.complete_renewal(p_request_id bigint, p_fingerprint text, p_not_after timestamptz, p_pem text, p_public_key text DEFAULT NULL)
RETURNS TABLE (device text, fingerprint text, not_after timestamptz)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_request vidsync.renewal_requests;
  v_device vidsync.devices;
BEGIN
  SELECT * INTO v_request FROM vidsync.renewal_requests r WHERE r.id = p_request_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no renewal request %', p_request_id USING ERRCODE = 'VS404';
  END IF;
  SELECT * INTO v_device FROM vidsync.devices d WHERE d.id = v_request.device_id FOR UPDATE;
  IF v_request.status <> 'pending' THEN
    RAISE EXCEPTION 'renewal request % is already %', p_request_id, v_request.status USING ERRCODE = 'VS409';
  END IF;
  IF v_device.status <> 'active' OR v_device.revoked_at IS NOT NULL THEN
    -- A row, not an error: the refusal stays recorded (an exception would roll it back).
    UPDATE vidsync.renewal_requests r SET status = 'refused', reason = 'device ' || v_device.status, decided_at = now() WHERE r.id = p_request_id;
    PERFORM vidsync.audit('cert.renew_refused', v_device.project_id, v_device.id, v_device.ip,
      jsonb_build_object('device', v_device.name, 'status', v_device.status, 'request', p_request_id));
    RETURN QUERY SELECT v_device.name, NULL::text, NULL::timestamptz;
    RETURN;
  END IF;
  IF v_request.public_key IS NULL THEN
    IF p_public_key IS DISTINCT FROM v_device.public_key AND p_public_key IS NOT NULL THEN
      RAISE EXCEPTION 'the certificate for renewal % is not for the registered key of device "%": not recorded', p_request_id, v_device.name USING ERRCODE = 'VS409';
    END IF;
  ELSE
    IF v_request.key_approved_at IS NULL THEN
      RAISE EXCEPTION 'device "%" asked for a certificate for a new key, which the operator has not approved: not recorded', v_device.name USING ERRCODE = 'VS409';
    END IF;
    IF p_public_key IS DISTINCT FROM v_request.public_key THEN
      RAISE EXCEPTION 'the certificate for renewal % is not for the new key that was approved for device "%": not recorded', p_request_id, v_device.name USING ERRCODE = 'VS409';
    END IF;
    UPDATE vidsync.devices d SET public_key = v_request.public_key, public_key_sha256 = v_request.public_key_sha256 WHERE d.id = v_device.id;
  END IF;
  INSERT INTO vidsync.certificates (device_id, fingerprint, not_after, pem) VALUES (v_device.id, p_fingerprint, p_not_after, p_pem);
  UPDATE vidsync.renewal_requests r SET status = 'signed', decided_at = now() WHERE r.id = p_request_id;
  PERFORM vidsync.audit(CASE WHEN v_request.public_key IS NULL THEN 'cert.renew' ELSE 'cert.renew_new_key' END, v_device.project_id, v_device.id, v_device.ip,
    jsonb_build_object('device', v_device.name, 'fingerprint', p_fingerprint, 'not_after', p_not_after, 'request', p_request_id));
  RETURN QUERY SELECT v_device.name, p_fingerprint, p_not_after;
END $$;

-- Operator: approves the new key an active device asked to be signed for; with p_public_key_sha256
-- (what the device printed) only that key.
CREATE FUNCTION vidsync.approve_key_change(p_project text, p_device text, p_public_key_sha256 text DEFAULT NULL)
RETURNS TABLE (device text, public_key_sha256 text, requested_at timestamptz, approved_at timestamptz)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_device vidsync.devices;
  v_request vidsync.renewal_requests;
BEGIN
  SELECT * INTO v_device FROM vidsync.devices d
   WHERE d.project_id = vidsync.project_id(p_project) AND d.name = p_device AND d.status = 'active' AND d.revoked_at IS NULL;
  IF FOUND THEN
    SELECT * INTO v_request FROM vidsync.renewal_requests r WHERE r.device_id = v_device.id AND r.status = 'pending' AND r.public_key IS NOT NULL FOR UPDATE;
  END IF;
  IF v_request.id IS NULL THEN
    RAISE EXCEPTION 'device "%" of project "%" has no new key waiting for approval', p_device, p_project USING ERRCODE = 'VS404';
  END IF;
  IF p_public_key_sha256 IS NOT NULL AND p_public_key_sha256 IS DISTINCT FROM v_request.public_key_sha256 THEN
    RAISE EXCEPTION 'the new key of device "%" has sha256 %, not %: not approved', p_device, v_request.public_key_sha256, p_public_key_sha256 USING ERRCODE = 'VS409';
  END IF;
  IF v_request.key_approved_at IS NULL THEN
    UPDATE vidsync.renewal_requests r SET key_approved_at = now() WHERE r.id = v_request.id RETURNING * INTO v_request;
    PERFORM vidsync.audit('cert.key_change_approved', v_device.project_id, v_device.id, v_device.ip,
      jsonb_build_object('device', v_device.name, 'public_key_sha256', v_request.public_key_sha256, 'request', v_request.id));
  END IF;
  RETURN QUERY SELECT v_device.name, v_request.public_key_sha256, v_request.requested_at, v_request.key_approved_at;
END $$;

-- Operator: `ca rotate`'s one write. Every project trusts the new CA, endorsed by the old one; a
-- project that never rotated first records the old CA it trusted. One call, one transaction.
-- Answers each project with the number of CAs it trusts now.
CREATE FUNCTION vidsync.rotate_project_cas(p_old_fingerprint text, p_old_pem text, p_fingerprint text, p_pem text, p_endorser text, p_signature text)
RETURNS TABLE (project text, trusted integer)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
  v_project record;
BEGIN
  FOR v_project IN SELECT p.id, p.name FROM vidsync.projects p ORDER BY p.name LOOP
    IF NOT EXISTS (SELECT 1 FROM vidsync.project_cas c WHERE c.project_id = v_project.id) THEN
      PERFORM vidsync.add_project_ca(v_project.name, p_old_fingerprint, p_old_pem);
    END IF;
    PERFORM vidsync.add_project_ca(v_project.name, p_fingerprint, p_pem, p_endorser, p_signature);
    project := v_project.name;
    trusted := (SELECT count(*) FROM vidsync.project_cas c WHERE c.project_id = v_project.id AND c.retired_at IS NULL);
    RETURN NEXT;
  END LOOP;
END $$;

-- Grants as in 008: operator functions for service_role only, the device-facing ones for anon.
REVOKE ALL ON FUNCTION vidsync.key_change_state(vidsync.renewal_requests), vidsync.device_request_renewal(text, text, text), vidsync.device_certificate(text),
  vidsync.signer_pending(text), vidsync.complete_renewal(bigint, text, timestamptz, text, text), vidsync.approve_key_change(text, text, text),
  vidsync.rotate_project_cas(text, text, text, text, text, text) FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION vidsync.key_change_state(vidsync.renewal_requests), vidsync.device_request_renewal(text, text, text), vidsync.device_certificate(text),
  vidsync.signer_pending(text), vidsync.complete_renewal(bigint, text, timestamptz, text, text), vidsync.approve_key_change(text, text, text),
  vidsync.rotate_project_cas(text, text, text, text, text, text) TO service_role;
GRANT EXECUTE ON FUNCTION vidsync.device_request_renewal(text, text, text), vidsync.device_certificate(text) TO anon;
