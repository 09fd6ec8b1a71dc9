select uid from (values ('u1'), ('u2'), ('u3')) as t(uid)
