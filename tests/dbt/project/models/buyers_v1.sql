select uid from (values ('old1')) as t(uid)
