select uid from (values ('new1'), ('new2')) as t(uid)
