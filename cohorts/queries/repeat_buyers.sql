-- Customers with at least two orders in the 90 days before the newest order.
SELECT o.user_id
FROM orders AS o
WHERE o.ordered_at >= (SELECT DATE(MAX(ordered_at), '-90 days') FROM orders)
GROUP BY o.user_id
HAVING COUNT(*) >= 2
